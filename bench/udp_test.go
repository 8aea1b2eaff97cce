package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// The figures of issue 16 for UDP listeners: datagrams lost over reloads
// under a steady request-response load, and the spread of datagrams from
// many source ports over the children.
const (
	udpWorkers = 4
	// udpRate is the load's datagrams per second over all client sockets.
	udpRate = 20_000
	// udpClients sockets share the load, each with at most udpWindow
	// datagrams unanswered: a client that never overflows a buffer by
	// itself. A small datagram takes 832 bytes of a loopback socket's
	// receive buffer here, so the default 208 KiB holds 256: 16 x 8 fit
	// in one socket even if every client hashes to the same slot.
	udpClients = 16
	udpWindow  = 8
	// udpReloads is how many reloads BenchmarkUDPReloadLoss runs, one
	// after another, per socket mode.
	udpReloads = 20
	// udpStall is how long a client socket's full window may go without
	// an answer before it is written off (counted lost unless its answers
	// come late) and the socket sends again.
	udpStall = time.Second
	// udpLate bounds the wait for late answers once the load stops.
	udpLate = 5 * time.Second
	// udpMaxDuration bounds one load run, whatever the reloads take.
	udpMaxDuration = 3 * time.Minute
	// udpSpreadSources is BenchmarkUDPSpread's number of client sockets.
	udpSpreadSources = 1_000
)

// udpLoadResult is what one load run counted.
type udpLoadResult struct {
	sent, answered int64
	stalls         int64 // windows written off
	errs           int64 // failed writes and reads, answers not the JSON
	behind         int64 // sends the window held back past their time
	elapsed        time.Duration
	firstErr       error
}

func (r udpLoadResult) lost() int64 { return r.sent - r.answered }

func (r udpLoadResult) rate() float64 { return float64(r.sent) / r.elapsed.Seconds() }

func (r udpLoadResult) String() string {
	return fmt.Sprintf("%d sent in %v (%.0f/s), %d answered, %d lost, %d windows written off, %d sends held back by the window, %d errors (first: %v)",
		r.sent, r.elapsed.Round(time.Millisecond), r.rate(), r.answered, r.lost(), r.stalls, r.behind, r.errs, r.firstErr)
}

// udpLoad is a steady request-response load on one UDP address: each
// client socket sends its share of udpRate, every datagram numbered, and
// counts the answers (the reference child's answer does not carry the
// request back, so a socket counts what it sent and what came back).
type udpLoad struct {
	sent, answered, stalls, errs, behind atomic.Int64
	errOnce                              sync.Once
	firstErr                             error
	stop                                 chan struct{}
	wg                                   sync.WaitGroup
	start                                time.Time
	stopped                              time.Time
	ports                                []int // the client sockets' own ports
}

// startUDPLoad starts the load on addr; it runs until stopLoad, and at
// most udpMaxDuration.
func startUDPLoad(tb testing.TB, addr string) *udpLoad {
	tb.Helper()
	l := &udpLoad{stop: make(chan struct{}), start: time.Now()}
	for i := range udpClients {
		c, err := net.Dial("udp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		l.ports = append(l.ports, c.LocalAddr().(*net.UDPAddr).Port)
		credit := make(chan struct{}, udpWindow)
		for range udpWindow {
			credit <- struct{}{}
		}
		var inFlight atomic.Int64
		l.wg.Go(func() { l.send(c, i, credit, &inFlight) })
		l.wg.Go(func() { l.receive(c, credit, &inFlight) })
	}
	return l
}

func (l *udpLoad) fail(err error) {
	l.errs.Add(1)
	l.errOnce.Do(func() { l.firstErr = err })
}

// send sends this socket's share of the rate: every 2 ms, the datagrams
// due since the start, as far as the window lets it.
func (l *udpLoad) send(c net.Conn, client int, credit chan struct{}, inFlight *atomic.Int64) {
	// Once sending stops, the receiver waits for late answers, bounded
	// (from then: a deferred call's arguments would be evaluated now).
	defer func() { c.SetReadDeadline(time.Now().Add(udpLate)) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	perSocket := float64(udpRate) / udpClients
	deadline := l.start.Add(udpMaxDuration)
	var seq uint64
	buf := make([]byte, 0, 32)
	for {
		select {
		case <-l.stop:
			return
		case now := <-tick.C:
			if now.After(deadline) {
				return
			}
			due := uint64(now.Sub(l.start).Seconds() * perSocket)
			for seq < due {
				select {
				case <-credit:
				default:
					// The window is full: wait for an answer, or write
					// the window off after udpStall.
					l.behind.Add(1)
					select {
					case <-credit:
					case <-l.stop:
						return
					case <-time.After(udpStall):
						l.stalls.Add(1)
						for range inFlight.Swap(0) {
							select {
							case credit <- struct{}{}:
							default:
							}
						}
						continue
					}
				}
				seq++
				inFlight.Add(1)
				l.sent.Add(1)
				buf = strconv.AppendUint(append(buf[:0], byte('a'+client), ' '), seq, 10)
				if _, err := c.Write(buf); err != nil {
					l.fail(fmt.Errorf("write: %w", err))
				}
			}
		}
	}
}

func (l *udpLoad) receive(c net.Conn, credit chan struct{}, inFlight *atomic.Int64) {
	buf := make([]byte, 512)
	var w struct {
		Slot int `json:"slot"`
	}
	for {
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // ECONNREFUSED: a datagram met no socket
			l.fail(fmt.Errorf("read: %w", err))
			continue
		}
		l.answered.Add(1)
		if json.Unmarshal(buf[:n], &w) != nil {
			l.fail(fmt.Errorf("answer %q is not the JSON", buf[:n]))
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

// stopLoad stops sending, waits (bounded) for the late answers, and
// returns the counts.
func (l *udpLoad) stopLoad(tb testing.TB) udpLoadResult {
	tb.Helper()
	l.stopped = time.Now()
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(udpLate + 30*time.Second):
		tb.Fatalf("the UDP load still running %v after it stopped", udpLate+30*time.Second)
	}
	return udpLoadResult{sent: l.sent.Load(), answered: l.answered.Load(), stalls: l.stalls.Load(),
		errs: l.errs.Load(), behind: l.behind.Load(), elapsed: l.stopped.Sub(l.start), firstErr: l.firstErr}
}

// startUDPMaster starts a master of udpWorkers reference children with
// one UDP listener (unnamed: "default") and metrics on a free port, and
// waits until they are ready. It returns the master, the UDP address and
// the metrics address.
func startUDPMaster(b *testing.B, args ...string) (*master, string, string) {
	b.Helper()
	addr, metrics := testkit.FreeUDPAddr(b), testkit.FreeAddr(b)
	m := startMasterOn(b, "udp://"+addr, udpWorkers, append([]string{"--metrics", metrics}, args...)...)
	m.waitReady(time.Minute, udpWorkers)
	return m, addr, metrics
}

var datagramsLine = regexp.MustCompile(`(?m)^prefork_child_datagrams_total\{listener="default",slot="\d+"\} (\d+)$`)

// datagramsRead is the datagrams every child of the master read, from
// its /metrics.
func datagramsRead(tb testing.TB, metrics string) int64 {
	tb.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + metrics + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, m := range datagramsLine.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}

// udpRun is one load run of BenchmarkUDPReloadLoss.
type udpRun struct {
	udpLoadResult
	reloads int
	read    int64 // datagrams the children read (the counter pages)
	// serverDrops and clientDrops are the kernel's drops on the master's
	// sockets (master mode; child mode: the children's still open) and
	// on the client's; rcvbufErrors is the host's UDP RcvbufErrors over
	// the run (every process's: a hint).
	serverDrops, clientDrops, rcvbufErrors int64
}

func (r udpRun) String() string {
	return fmt.Sprintf("%d reloads: %v; %d read by a child and not answered; kernel drops on the server's open sockets %d, on the client's %d; host UDP RcvbufErrors meanwhile %d",
		r.reloads, r.udpLoadResult, r.read-r.answered, r.serverDrops, r.clientDrops, r.rcvbufErrors)
}

// udpReloadRun starts a master in the socket mode given, puts the load
// on it, and either runs reloads reloads one after another (each `master
// reload`, which returns once the new generation serves), or, with
// reloads 0, keeps the load on for d.
func udpReloadRun(b *testing.B, sockets string, reloads int, d time.Duration) udpRun {
	b.Helper()
	m, addr, metrics := startUDPMaster(b, "--sockets", sockets, "--drain-timeout", "10s")
	errs0 := testkit.UDPCounters(b)["RcvbufErrors"]
	load := startUDPLoad(b, addr)
	waitAnswers(b, load, 1000)
	for i := range reloads {
		if out, err := runReload(m); err != nil {
			b.Fatalf("--sockets %s: reload %d: %v: %s", sockets, i+1, err, out)
		}
	}
	if reloads == 0 {
		time.Sleep(d - time.Since(load.start))
	}
	waitAnswers(b, load, 1000)
	r := udpRun{udpLoadResult: load.stopLoad(b), reloads: reloads}
	r.read = datagramsRead(b, metrics)
	r.serverDrops = testkit.UDPDrops(b, int(netip.MustParseAddrPort(addr).Port()))
	r.clientDrops = testkit.UDPDrops(b, load.ports...)
	r.rcvbufErrors = testkit.UDPCounters(b)["RcvbufErrors"] - errs0
	m.stop()
	return r
}

// waitAnswers waits (up to 30 s) for n more answers.
func waitAnswers(b *testing.B, l *udpLoad, n int64) {
	b.Helper()
	want := l.answered.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for l.answered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("waited 30 s for %d answers to the UDP load: %d sent, %d answered", n, l.sent.Load(), l.answered.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkUDPReloadLoss: datagrams lost over 20 reloads under a steady
// UDP request-response load of about 20,000 datagrams/s (16 client
// sockets, each datagram numbered, at most 8 unanswered per socket; a
// client counts what it sent and what was answered), N = 4, in each
// socket mode (the figure; goal: master mode 0). Each reload is
// `master reload`, started once the previous one returned; after the
// last, the load goes on until 1,000 more answers came, then stops and
// waits (up to 5 s) for late answers. A baseline run with no reload, as
// long as the reload run, in the same invocation tells the loss of the
// reloads from the loss of the load itself. Reported per socket mode:
// sent, answered and lost, of the reload run and of the baseline, and
// what the children read but did not answer (from their counter pages).
func BenchmarkUDPReloadLoss(b *testing.B) {
	for _, sockets := range []string{"child", "master"} {
		b.Run("sockets="+sockets, func(b *testing.B) {
			var reload, base udpRun
			for b.Loop() {
				reload = udpReloadRun(b, sockets, udpReloads, 0)
				base = udpReloadRun(b, sockets, 0, reload.elapsed)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(reload.sent), "sent")
			b.ReportMetric(float64(reload.answered), "answered")
			b.ReportMetric(float64(reload.lost()), "lost")
			b.ReportMetric(reload.rate(), "datagrams/s")
			b.ReportMetric(float64(reload.read-reload.answered), "read-unanswered")
			b.ReportMetric(float64(base.sent), "base-sent")
			b.ReportMetric(float64(base.lost()), "base-lost")
			b.Logf("--sockets %s, reload run: %v", sockets, reload)
			b.Logf("--sockets %s, baseline:   %v", sockets, base)
		})
	}
}

// spreadRound sends one datagram from each of udpSpreadSources new
// client sockets (so as many source ports) to addr, 100 sockets at a
// time, and counts the answers by the slot they name. It returns the
// counts by slot and the datagrams not answered within 5 s.
func spreadRound(addr string) ([udpWorkers]int, int, error) {
	var (
		mu      sync.Mutex
		perSlot [udpWorkers]int
		missed  int
		first   error
	)
	sockets := make([]net.Conn, 0, udpSpreadSources)
	defer func() {
		for _, c := range sockets {
			c.Close()
		}
	}()
	for len(sockets) < udpSpreadSources {
		var wg sync.WaitGroup
		for range min(100, udpSpreadSources-len(sockets)) {
			// Every socket stays open to the end, so each has a source
			// port of its own.
			c, err := net.Dial("udp", addr)
			if err != nil {
				return perSlot, 0, err
			}
			sockets = append(sockets, c)
			wg.Go(func() {
				slot, err := askSlot(c)
				mu.Lock()
				defer mu.Unlock()
				if err == nil && (slot < 0 || slot >= udpWorkers) {
					err = fmt.Errorf("answer names slot %d of %d", slot, udpWorkers)
				}
				if err != nil {
					missed++
					if first == nil {
						first = err
					}
					return
				}
				perSlot[slot]++
			})
		}
		wg.Wait()
	}
	return perSlot, missed, first
}

// askSlot sends one datagram on c and returns the slot of its answer.
func askSlot(c net.Conn) (int, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("slot?")); err != nil {
		return 0, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return 0, err
	}
	var w struct {
		Slot int `json:"slot"`
	}
	if err := json.Unmarshal(buf[:n], &w); err != nil {
		return 0, fmt.Errorf("answer %q: %w", buf[:n], err)
	}
	return w.Slot, nil
}

// BenchmarkUDPSpread: 1,000 client sockets (1,000 source ports), one
// datagram each, to the UDP listener of a master with N = 4, in child
// socket mode (each child's own socket; nothing is steered where every
// listener is UDP) and master socket mode with --steer off (the kernel's
// hash over the master's sockets) and --steer on (the steering program
// picks the slot for every datagram). The metric is the busiest slot's
// answers over the idlest's (1 is a perfect spread; a uniform hash of
// 1,000 over 4 gives about 1.1 to 1.3), the median over the iterations.
func BenchmarkUDPSpread(b *testing.B) {
	for _, s := range []struct{ name, sockets, steer string }{
		{name: "sockets=child", sockets: "child", steer: "auto"},
		{name: "sockets=master,steer=off", sockets: "master", steer: "off"},
		{name: "sockets=master,steer=on", sockets: "master", steer: "on"},
	} {
		b.Run(s.name, func(b *testing.B) {
			_, addr, _ := startUDPMaster(b, "--sockets", s.sockets, "--steer", s.steer)
			var ratios []float64
			var last [udpWorkers]int
			for b.Loop() {
				perSlot, missed, err := spreadRound(addr)
				if missed != 0 || err != nil {
					b.Fatalf("%d of %d datagrams not answered (first: %v)", missed, udpSpreadSources, err)
				}
				lo, hi := slices.Min(perSlot[:]), slices.Max(perSlot[:])
				if lo == 0 {
					b.Fatalf("a slot got none of %d datagrams: %v", udpSpreadSources, perSlot)
				}
				ratios = append(ratios, float64(hi)/float64(lo))
				last = perSlot
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(ratios), "max/min")
			b.Logf("%s: %d source ports over %d children: max/min per slot median %.3f over %d runs (last run per slot: %v)",
				s.name, udpSpreadSources, udpWorkers, median(ratios), len(ratios), last)
		})
	}
}
