package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// Issue 16 end to end: named listeners (repeated --listen, a list under
// listen: in the config file), UDP listeners in both socket modes, the
// per-listener metrics and the listen line of `master status`, with
// bin/master and the reference child, which answers every datagram with
// its {"slot","generation","pid"} JSON.

// askUDP sends one datagram to addr from a new socket and decodes the
// reference child's answer.
func askUDP(addr string) (whoami, error) {
	b, err := askUDPRaw(addr)
	if err != nil {
		return whoami{}, err
	}
	var w whoami
	if err := json.Unmarshal(b, &w); err != nil {
		return whoami{}, fmt.Errorf("answer %q: %w", b, err)
	}
	return w, nil
}

// askUDPRaw sends one datagram to addr from a new socket and returns the
// answer. A datagram lost on loopback is unexpected, so one try, 5 s.
func askUDPRaw(addr string) ([]byte, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("whoami")); err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// seriesLine matches one per-listener child series of /metrics.
var seriesLine = regexp.MustCompile(`(?m)^prefork_child_(accepts_total|datagrams_total|listen_queue_length|receive_queue_bytes)\{listener="([^"]+)",slot="(\d+)"\} (\d+)$`)

// listenerSeries is the per-listener child series of one scrape:
// metric (without prefork_child_) -> listener -> slot -> value.
type listenerSeries map[string]map[string]map[int]uint64

func parseListenerSeries(text string) listenerSeries {
	s := listenerSeries{}
	for _, m := range seriesLine.FindAllStringSubmatch(text, -1) {
		if s[m[1]] == nil {
			s[m[1]] = map[string]map[int]uint64{}
		}
		if s[m[1]][m[2]] == nil {
			s[m[1]][m[2]] = map[int]uint64{}
		}
		slot, _ := strconv.Atoi(m[3])
		v, _ := strconv.ParseUint(m[4], 10, 64)
		s[m[1]][m[2]][slot] = v
	}
	return s
}

// sum is the total of metric on listener over the slots.
func (s listenerSeries) sum(metric, listener string) uint64 {
	var n uint64
	for _, v := range s[metric][listener] {
		n += v
	}
	return n
}

// slots is how many slots have metric on listener.
func (s listenerSeries) slots(metric, listener string) int { return len(s[metric][listener]) }

// listenLine returns the "listen ..." line of `master status`.
func (m *master) listenLine() string {
	m.t.Helper()
	code, out, errOut := m.ctl("status")
	if code != 0 {
		m.t.Fatalf("master status: exit %d: %s", code, errOut)
	}
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(line, "listen "); ok {
			return strings.TrimSpace(rest)
		}
	}
	m.t.Fatalf("master status prints no listen line:\n%s", out)
	return ""
}

// statusListen returns the "listen" array of GET /status.
func (m *master) statusListen() []string {
	m.t.Helper()
	code, out, errOut := m.ctl("status", "--json")
	if code != 0 {
		m.t.Fatalf("master status --json: exit %d: %s", code, errOut)
	}
	var st struct {
		Listen []string `json:"listen"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		m.t.Fatalf("master status --json: %v: %q", err, out)
	}
	return st.Listen
}

// liveChild reports whether pid is a child the master started and is
// still alive.
func (m *master) liveChild(pid int) bool {
	m.mu.Lock()
	started := m.pids[pid]
	m.mu.Unlock()
	return started && testkit.Alive(pid)
}

// Three named listeners, two TCP and one UDP, 2 workers, in each socket
// mode: both TCP addresses serve /whoami, the UDP one answers a datagram
// with a live child's slot, generation and pid; /metrics counts accepts
// per TCP listener and datagrams per UDP listener, exactly, and has the
// queue gauges of each; `master status` prints the listen line and GET
// /status lists the listeners.
func TestListenersNamedBothModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"child", "master"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const (
				workers = 2
				k       = 6 // requests per TCP listener, datagrams to the UDP one
			)
			httpAddr, adminAddr, dnsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeUDPAddr(t)
			metricsAddr := testkit.FreeAddr(t)
			m := startMasterOn(t, "", nil, "--workers", strconv.Itoa(workers), "--sockets", mode,
				"--metrics", metricsAddr, "--listen", "http="+httpAddr, "--listen", "admin="+adminAddr,
				"--listen", "dns=udp://"+dnsAddr)
			m.waitReady(workers)

			before := parseListenerSeries(scrape(t, metricsAddr))
			for _, addr := range []string{httpAddr, adminAddr} {
				for range k {
					w, err := getWhoami(addr)
					if err != nil {
						t.Fatalf("GET /whoami on %s: %v", addr, err)
					}
					if w.Generation != 1 || !m.liveChild(w.PID) {
						t.Errorf("GET /whoami on %s: %+v, want generation 1 and a live child", addr, w)
					}
				}
			}
			for range k {
				w, err := askUDP(dnsAddr)
				if err != nil {
					t.Fatalf("datagram to %s: %v", dnsAddr, err)
				}
				if w.Generation != 1 || w.Slot < 0 || w.Slot >= workers || !m.liveChild(w.PID) {
					t.Errorf("datagram to %s answered %+v, want generation 1, a slot below %d and a live child", dnsAddr, w, workers)
				}
			}
			after := parseListenerSeries(scrape(t, metricsAddr))
			for _, c := range []struct{ metric, listener string }{
				{"accepts_total", "http"}, {"accepts_total", "admin"}, {"datagrams_total", "dns"},
			} {
				if got := after.sum(c.metric, c.listener) - before.sum(c.metric, c.listener); got != k {
					t.Errorf("prefork_child_%s{listener=%q} went up by %d over the slots, want %d", c.metric, c.listener, got, k)
				}
			}
			for _, c := range []struct{ metric, listener string }{
				{"accepts_total", "http"}, {"accepts_total", "admin"}, {"datagrams_total", "dns"},
				{"listen_queue_length", "http"}, {"listen_queue_length", "admin"}, {"receive_queue_bytes", "dns"},
			} {
				if n := after.slots(c.metric, c.listener); n != workers {
					t.Errorf("prefork_child_%s{listener=%q}: %d slots, want %d", c.metric, c.listener, n, workers)
				}
			}
			// A listener has only its network's series.
			for _, c := range []struct{ metric, listener string }{
				{"datagrams_total", "http"}, {"receive_queue_bytes", "admin"}, {"accepts_total", "dns"}, {"listen_queue_length", "dns"},
			} {
				if n := after.slots(c.metric, c.listener); n != 0 {
					t.Errorf("prefork_child_%s{listener=%q} exported for %d slots, want none", c.metric, c.listener, n)
				}
			}

			want := fmt.Sprintf("http=%s, admin=%s, dns=udp://%s", httpAddr, adminAddr, dnsAddr)
			if got := m.listenLine(); got != want {
				t.Errorf("master status: listen %q, want %q", got, want)
			}
			if got, want := strings.Join(m.statusListen(), ","), strings.ReplaceAll(want, ", ", ","); got != want {
				t.Errorf("GET /status listen %q, want %q", got, want)
			}
		})
	}
}

// A reload through the config file (listen: as a YAML list) that drops
// admin, moves http to a new port and keeps dns, in each socket mode: the
// new http serves generation 2, nothing listens on admin's or http's old
// port any more, dns answers from generation 2, and no slot's datagram
// count ever goes down.
func TestListenersReloadChangesAddresses(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"child", "master"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const workers = 2
			httpAddr, adminAddr, newHTTP, dnsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeUDPAddr(t)
			metricsAddr := testkit.FreeAddr(t)
			cfg := filepath.Join(t.TempDir(), "prefork.yaml")
			config := func(listen ...string) string {
				return childConfig(workers, fmt.Sprintf("sockets: %s\nlisten:\n  - %s\n", mode, strings.Join(listen, "\n  - ")))
			}
			writeConfig(t, cfg, config("http="+httpAddr, "admin="+adminAddr, "dns=udp://"+dnsAddr))
			m := startMasterOn(t, "", nil, "--config", cfg, "--metrics", metricsAddr)
			m.waitReady(workers)
			for _, addr := range []string{httpAddr, adminAddr} {
				if _, err := getWhoami(addr); err != nil {
					t.Fatalf("GET /whoami on %s before the reload: %v", addr, err)
				}
			}
			for range 4 {
				if _, err := askUDP(dnsAddr); err != nil {
					t.Fatalf("datagram before the reload: %v", err)
				}
			}
			counts := parseListenerSeries(scrape(t, metricsAddr))["datagrams_total"]["dns"]
			// neverDown checks a new scrape's datagram counts against the
			// last, slot by slot.
			neverDown := func(when string) {
				now := parseListenerSeries(scrape(t, metricsAddr))["datagrams_total"]["dns"]
				for slot, was := range counts {
					if now[slot] < was {
						t.Errorf("%s: slot %d's datagram count went down from %d to %d", when, slot, was, now[slot])
					}
				}
				counts = now
			}

			writeConfig(t, cfg, config("http="+newHTTP, "dns=udp://"+dnsAddr))
			code, out, errOut := m.ctl("reload")
			if code != 0 || !strings.Contains(out, "generation 2 serves") {
				t.Fatalf("reload: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			neverDown("right after the reload")
			w, err := getWhoami(newHTTP)
			if err != nil || w.Generation != 2 {
				t.Errorf("GET /whoami on the new http address %s: %+v, %v; want generation 2", newHTTP, w, err)
			}
			eventually(t, 30*time.Second, "nothing listening on admin's "+adminAddr+" nor http's old "+httpAddr, func() bool {
				return portFree(adminAddr) && portFree(httpAddr)
			})
			eventually(t, 30*time.Second, "only generation 2 answering datagrams", func() bool {
				for range 8 {
					w, err := askUDP(dnsAddr)
					if err != nil {
						t.Fatalf("datagram after the reload: %v", err)
					}
					if w.Generation != 2 {
						return false
					}
				}
				return true
			})
			neverDown("once generation 2 answers alone")
			if got, want := m.listenLine(), fmt.Sprintf("http=%s, dns=udp://%s", newHTTP, dnsAddr); got != want {
				t.Errorf("master status after the reload: listen %q, want %q", got, want)
			}
			if s := parseListenerSeries(scrape(t, metricsAddr)); s.slots("listen_queue_length", "admin") != 0 {
				t.Errorf("admin's queue gauge still exported after it was removed")
			}
		})
	}
}

// udpLoad is a request-response UDP load with a bounded window per client
// socket. The reference child's answer does not carry the request back,
// so each socket counts: what it sent, what was answered. A window that
// sees no answer for stall is written off (its datagrams are counted lost
// unless their answers come late) so that the socket goes on sending.
type udpLoad struct {
	sent, answered, bad, stalls atomic.Int64
	gens                        sync.Map // generation -> struct{}
	wg                          sync.WaitGroup
	stop                        chan struct{}
	ports                       []int // the client sockets' own ports
}

// startUDPLoad starts clients sockets sending to addr, each at most one
// datagram every every and window unanswered, until stop or max datagrams
// were sent over all sockets.
func startUDPLoad(t *testing.T, addr string, clients, window int, every time.Duration, max int64) *udpLoad {
	t.Helper()
	l := &udpLoad{stop: make(chan struct{})}
	for range clients {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		l.ports = append(l.ports, c.LocalAddr().(*net.UDPAddr).Port)
		credit := make(chan struct{}, window) // one token per answer
		for range window {
			credit <- struct{}{}
		}
		var inFlight atomic.Int64
		l.wg.Go(func() { l.send(c, credit, &inFlight, every, max) })
		l.wg.Go(func() { l.receive(c, credit, &inFlight) })
	}
	return l
}

func (l *udpLoad) send(c net.Conn, credit chan struct{}, inFlight *atomic.Int64, every time.Duration, max int64) {
	// The receiver's last wait for late answers, from when sending stops
	// (a deferred call's arguments would be evaluated now).
	defer func() { c.SetReadDeadline(time.Now().Add(5 * time.Second)) }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	const stall = 2 * time.Second
	var seq uint64
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		select {
		case <-credit:
		case <-l.stop:
			return
		case <-time.After(stall):
			// The window is stuck: what is in flight is lost (or late).
			l.stalls.Add(1)
			for range inFlight.Swap(0) {
				select {
				case credit <- struct{}{}:
				default:
				}
			}
			continue
		}
		if l.sent.Add(1) > max {
			l.sent.Add(-1)
			return
		}
		seq++
		inFlight.Add(1)
		if _, err := c.Write(strconv.AppendUint(nil, seq, 10)); err != nil {
			l.bad.Add(1)
		}
	}
}

func (l *udpLoad) receive(c net.Conn, credit chan struct{}, inFlight *atomic.Int64) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // ECONNREFUSED: a datagram met no socket
			l.bad.Add(1)
			continue
		}
		l.answered.Add(1)
		var w whoami
		if json.Unmarshal(buf[:n], &w) != nil {
			l.bad.Add(1)
		} else {
			l.gens.Store(w.Generation, struct{}{})
		}
		if inFlight.Add(-1) < 0 {
			inFlight.Add(1) // a late answer of a written-off window
			continue
		}
		select {
		case credit <- struct{}{}:
		default:
		}
	}
}

// waitAnswered waits (up to timeout) until n more answers came than when
// it was called.
func (l *udpLoad) waitAnswered(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	want := l.answered.Load() + n
	eventually(t, timeout, fmt.Sprintf("%d more answers to the UDP load", n), func() bool { return l.answered.Load() >= want })
}

// finish stops sending, waits (bounded) for every answer, and returns
// sent and answered.
func (l *udpLoad) finish(t *testing.T) (sent, answered int64) {
	t.Helper()
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the UDP load's goroutines still running 30 s after it stopped")
	}
	return l.sent.Load(), l.answered.Load()
}

// Master socket mode loses no datagram over 3 generation reloads and 1
// rolling reload under a request-response UDP load (8 sockets, at most
// 16 unanswered each): the master holds each slot's UDP socket, and the
// slot's next child reads what waits in it. Child socket mode loses the
// datagrams queued on a draining child's own socket: there the count is
// only logged.
func TestUDPReloadsLoseNoDatagram(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"master", "child"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const workers = 4
			dnsAddr, metricsAddr := testkit.FreeUDPAddr(t), testkit.FreeAddr(t)
			m := startMasterOn(t, "", nil, "--workers", strconv.Itoa(workers), "--sockets", mode,
				"--drain-timeout", "10s", "--metrics", metricsAddr, "--listen", "dns=udp://"+dnsAddr)
			m.waitReady(workers)
			errs0 := testkit.UDPCounters(t)
			load := startUDPLoad(t, dnsAddr, 8, 16, 4*time.Millisecond, 30_000)
			load.waitAnswered(t, 300, 30*time.Second)
			reloads := [][]string{{"reload"}, {"reload"}, {"reload"}, {"reload", "--strategy", "rolling", "--max-surge", "1"}}
			for i, args := range reloads {
				gen := i + 2
				code, out, errOut := m.ctl(args...)
				if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", gen)) {
					t.Fatalf("%v %d: exit %d, stdout %q, stderr %q", args, i+1, code, out, errOut)
				}
				load.waitAnswered(t, 300, 30*time.Second)
			}
			last := len(reloads) + 1
			eventually(t, 30*time.Second, fmt.Sprintf("every child of generation %d, none older", last), func() bool {
				return m.status().settled(last, workers)
			})
			load.waitAnswered(t, 300, 30*time.Second)
			sent, answered := load.finish(t)
			var gens []int
			load.gens.Range(func(k, _ any) bool { gens = append(gens, k.(int)); return true })
			lost := sent - answered
			// Where the lost ones went: read by a child (the counter page)
			// but never answered, or dropped by the kernel (the drops of
			// the sockets still open on the port).
			read := parseListenerSeries(scrape(t, metricsAddr)).sum("datagrams_total", "dns")
			port := netip.MustParseAddrPort(dnsAddr).Port()
			errs := testkit.UDPCounters(t)
			for k, v := range errs0 {
				errs[k] -= v
			}
			t.Logf("--sockets %s, %d reloads: %d datagrams sent, %d answered, %d lost (%d read by a child and not answered; "+
				"kernel drops on the server's open sockets %d, on the client's %d; the host's UDP InErrors, RcvbufErrors, NoPorts meanwhile: %d, %d, %d), "+
				"%d windows written off, %d bad; generations answering: %v",
				mode, len(reloads), sent, answered, lost, int64(read)-answered, testkit.UDPDrops(t, int(port)), testkit.UDPDrops(t, load.ports...),
				errs["InErrors"], errs["RcvbufErrors"], errs["NoPorts"], load.stalls.Load(), load.bad.Load(), gens)
			if sent < 1000 {
				t.Errorf("only %d datagrams sent: the load did not run", sent)
			}
			if load.bad.Load() != 0 {
				t.Errorf("%d datagrams failed or were answered with something other than the JSON", load.bad.Load())
			}
			if mode == "master" && lost != 0 {
				t.Errorf("master socket mode lost %d of %d datagrams over %d reloads, want 0", lost, sent, len(reloads))
			}
		})
	}
}

// Bad listener input is one clear line on stderr and a non-zero exit,
// before any child serves: an unnamed address among several, two names
// for one socket, a placeholder naming no listener, and a UDP address
// another socket holds without SO_REUSEPORT (in each socket mode).
func TestListenersBadInput(t *testing.T) {
	t.Parallel()
	busy, err := net.ListenPacket("udp", "127.0.0.1:0") // no SO_REUSEPORT
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	a, b := testkit.FreeAddr(t), testkit.FreeAddr(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unnamed among several", args: []string{"--listen", "a=" + a, "--listen", b},
			want: fmt.Sprintf("listen: %q has no name", b)},
		{name: "two names for one socket", args: []string{"--listen", "a=" + a, "--listen", "b=tcp://" + a},
			want: "are the same socket"},
		{name: "two sockets for one name", args: []string{"--listen", "a=" + a, "--listen", "a=" + b},
			want: "have the same name"},
		{name: "placeholder naming no listener", args: []string{"--listen", "http=" + a, "--", "/bin/echo", "{listen:nope}"},
			want: "placeholder {listen:nope} names no listener (listeners: http)"},
		{name: "udp address in use, child mode", args: []string{"--sockets", "child", "--listen", "dns=udp://" + busy.LocalAddr().String()},
			want: "is already in use"},
		{name: "udp address in use, master mode", args: []string{"--sockets", "master", "--listen", "dns=udp://" + busy.LocalAddr().String()},
			want: "is already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"run", "--control", "", "--metrics", "", "--workers", "2"}, tt.args...)
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "master"), args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.WaitDelay = time.Second
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("master still running 20 s after start on bad input; stderr:\n%s", stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			code := -1
			if cmd.ProcessState != nil {
				code = cmd.ProcessState.ExitCode()
			}
			if code == 0 || strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d (%v), stderr %q; want non-zero and one line with %q", code, err, out, tt.want)
			}
		})
	}
}
