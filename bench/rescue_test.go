package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// The setups of BenchmarkRescue.
const (
	rescueWorkers = 4
	rescueVictim  = 2 // the slot whose child is stopped
	rescueRounds  = 3 // wrk runs per setup (none, stopped), alternated
	// rescueDials is how many connections are dialed at once right after
	// the stop (figure 3): about a quarter land in the stopped child's
	// queue.
	rescueDials       = 128
	rescueLatencyRuns = 3 // fresh masters per mode and load
	rescueLoadClients = 16
	rescueChurnClient = 32
	rescueTimeout     = 5 * time.Second // per request of the Go clients
	rescueChurnBound  = 15 * time.Minute
	// rescuesEnv sets how many rescue log lines the churn (figure 4)
	// waits for; the default keeps `go test -bench Rescue` short.
	rescuesEnv     = "PREFORK_RESCUES"
	rescuesDefault = 50
)

// rescueWrkArgs is the load, without the URL.
var rescueWrkArgs = []string{"-t2", "-c32", "-d5s", "--timeout", "2s", "-H", "Connection: close"}

// BenchmarkRescue measures the rescue of a stuck slot's accept queue
// (issue 13, "Figures to report"), in each socket mode, always with
// --steer on, 4 children of the reference child, slot 2's SIGSTOPped:
//
//  1. `wrk -t2 -c32 -d5s --timeout 2s -H 'Connection: close'` started
//     right at the SIGSTOP of a master just ready (no warm-up), against
//     the same run with none stopped: rounds alternate none, stopped,
//     none, stopped..., a fresh master each run. Reported: the medians
//     of req/s, the median of the rounds' ratios stopped/none (goal ≥
//     0.75), and wrk's socket errors and non-2xx answers.
//  2. During those runs, the stopped slot's accept queue at stop + 1.0 s
//     (goal 0), and the max of the samples taken every 100 ms from 1 s
//     to 5 s: a rescued slot whose child used no CPU is given
//     connections again (probed) 1 s after the rescue, so a few queue
//     there for a stuck window before the next rescue. The queue is read
//     with sock_diag, the number prefork_child_listen_queue_length
//     reports: a scrape of the master's metrics under this load took 0.7
//     to 7 s (the collector reads /proc/net/tcp, which then lists tens of
//     thousands of TIME_WAIT sockets), and runs with slow scrapes had a
//     lower throughput (the cause was not isolated).
//  3. The latency, from dial to the whole answer, of connections that
//     were queued on the stopped child: right after the SIGSTOP, 128
//     GETs are dialed at once; those that sit in the stopped child's
//     queue (a server-side socket with no inode yet in sock_diag, twice
//     10 ms apart: the healthy children accept theirs at once; about a
//     quarter) are timed to their whole answer. Under a
//     background load of 16 clients (a new connection per request) that
//     keeps the steering checks at their 25 ms pace, and with no load
//     (the checks back off to 100 ms when the group is idle); 3 fresh
//     masters each.
//  4. Under a background load of 32 clients (a new connection per
//     request, every failure counted by kind), SIGSTOP of the child,
//     wait for the master's "moved the connections queued on a stuck
//     slot" line, SIGCONT, wait for "slot takes new connections again",
//     wait 1 s (see rescueChurn), until PREFORK_RESCUES (default 50)
//     rescue lines, at most 15 min.
//     Reported: rescues, connections rescued
//     (prefork_child_rescued_connections_total), failures by kind.
//
// Each mode runs them as sub-benchmarks wrk, queued and churn, so that
// one can be run alone (-bench 'Rescue/sockets=child/churn').
//
// It skips without wrk, or where the steering program does not load
// (not root). Nothing is asserted of the figures: the goals are the
// issue's, and the doc says which are met.
func BenchmarkRescue(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not installed (apt-get install wrk adds it): ", err)
	}
	if os.Geteuid() != 0 {
		b.Skip("the steering program loads only as root here, and the rescue needs it")
	}
	for _, mode := range []string{"master", "child"} {
		b.Run("sockets="+mode, func(b *testing.B) {
			b.Run("wrk", func(b *testing.B) { benchRescueWrk(b, wrk, mode) })
			b.Run("queued", func(b *testing.B) { benchRescueQueued(b, mode) })
			b.Run("churn", func(b *testing.B) { benchRescueChurn(b, mode) })
		})
	}
}

// rescueCount is how many rescue log lines the churn waits for.
func rescueCount(b *testing.B) int { return countFromEnv(b, rescuesEnv, rescuesDefault, "rescues") }

// benchRescueWrk: figures 1 and 2.
func benchRescueWrk(b *testing.B, wrk, mode string) {
	var none, stopped []wrkRescueRun
	var ratios []float64
	for b.Loop() {
		for range rescueRounds {
			n := rescueWrkRun(b, wrk, mode, false)
			s := rescueWrkRun(b, wrk, mode, true)
			none, stopped = append(none, n), append(stopped, s)
			ratios = append(ratios, s.rate()/n.rate())
		}
	}
	medOf := func(runs []wrkRescueRun, f func(wrkRescueRun) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(medOf(none, wrkRescueRun.rate), "req/s-none")
	b.ReportMetric(medOf(stopped, wrkRescueRun.rate), "req/s-stopped")
	b.ReportMetric(median(ratios), "stopped/none")
	b.ReportMetric(medOf(stopped, wrkRescueRun.failed), "wrk-errors-stopped")
	b.ReportMetric(medOf(stopped, func(r wrkRescueRun) float64 { return float64(r.queueAt1s) }), "queued-at-1s")
	b.ReportMetric(medOf(stopped, func(r wrkRescueRun) float64 { return float64(r.queueMax) }), "queued-max-1-5s")
	b.Logf("sockets=%s: wrk %s, %d rounds, a fresh master each run; q@1s, qmax: the stopped slot's accept queue (sock_diag, the number prefork_child_listen_queue_length reports) at stop + 1.0 s and the max every 100 ms from 1 to 5 s; lag: the latest sample's delay; rescued: connections in the rescue log lines:\n%s",
		mode, strings.Join(rescueWrkArgs, " "), len(none), rescueWrkTable(none, stopped))
	b.Logf("sockets=%s: req/s stopped/none: median of the rounds' ratios %.3f (goal ≥ 0.75; per round %s; ratio of medians %.3f)",
		mode, median(ratios), fmtRatios(ratios), medOf(stopped, wrkRescueRun.rate)/medOf(none, wrkRescueRun.rate))
}

// benchRescueQueued: figure 3.
func benchRescueQueued(b *testing.B, mode string) {
	lat := map[bool][]time.Duration{} // by under load
	for b.Loop() {
		for _, load := range []bool{true, false} {
			for range rescueLatencyRuns {
				lat[load] = append(lat[load], rescueQueuedLatency(b, mode, load)...)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	for _, load := range []bool{true, false} {
		key, what := "idle", "no load"
		if load {
			key, what = "load", fmt.Sprintf("%d clients of load", rescueLoadClients)
		}
		d := lat[load]
		b.ReportMetric(float64(len(d)), "conns-"+key)
		b.ReportMetric(ms(quantileOf(d, 0.5)), "ms/p50-"+key)
		b.ReportMetric(ms(quantileOf(d, 0.99)), "ms/p99-"+key)
		b.ReportMetric(ms(quantileOf(d, 1)), "ms/max-"+key)
		b.Logf("sockets=%s: %d connections queued on the stopped child (%d masters), %s: dial to whole answer p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal p99 < 250 ms)",
			mode, len(d), rescueLatencyRuns, what, ms(quantileOf(d, 0.5)), ms(quantileOf(d, 0.99)), ms(quantileOf(d, 1)))
	}
}

// benchRescueChurn: figure 4.
func benchRescueChurn(b *testing.B, mode string) {
	want := rescueCount(b)
	var churn churnResult
	for b.Loop() {
		churn = rescueChurn(b, mode, want)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(churn.rescues), "rescues")
	b.ReportMetric(float64(churn.rescued), "rescued-conns")
	b.ReportMetric(churn.load.failures(), "failed-requests")
	b.Logf("sockets=%s: churn under %d clients: %d stops, %d rescue lines (%d connections in them), %d connections rescued (metrics), %d stops with no rescue line in 5 s, %d not back in 20 s, in %v (stop to rescue line median %.0f ms, SIGCONT to back median %.0f ms); load: %d ok, %d failed %s",
		mode, rescueChurnClient, churn.cycles, churn.rescues, churn.logged, churn.rescued, churn.noRescue, churn.notBack,
		churn.took.Round(time.Second), median(churn.toRescue), median(churn.toBack), churn.load.ok, int(churn.load.failures()), fmtErrs(churn.load))
}

// wrkRescueRun is one wrk run of figure 1 and the queue samples of
// figure 2.
type wrkRescueRun struct {
	stopped   bool
	wrk       wrkCounts
	queueAt1s int   // the stopped slot's queue at stop + 1.0 s; -1: no sample
	queueMax  int   // the max of the samples from 1 s to 5 s
	samples   []int // every 100 ms from 1 s
	sampleLag time.Duration
	rescued   int // connections of the rescue log lines
}

func (r wrkRescueRun) rate() float64 {
	if r.wrk.Seconds == 0 {
		return 0
	}
	return float64(r.wrk.Requests) / r.wrk.Seconds
}

func (r wrkRescueRun) failed() float64 { return float64(r.wrk.failed()) }

// rescueMaster is a master of BenchmarkRescue with its metrics address.
type rescueMaster struct {
	*master
	metrics string
	pids    map[int]int // by slot
}

// startRescueMaster starts a master with rescueWorkers children in the
// socket mode given and --steer on, and waits until every child is ready
// and, in child socket mode, its listener is held by the master (the
// slot is steered only then). It skips when the steering program does
// not load.
func startRescueMaster(b *testing.B, mode string) *rescueMaster {
	b.Helper()
	maddr := testkit.FreeAddr(b)
	m := startMaster(b, rescueWorkers, "--sockets", mode, "--steer", "on", "--metrics", maddr)
	pids := readyBySlot(m.waitReady(time.Minute, rescueWorkers))
	deadline := time.Now().Add(10 * time.Second)
	for !heldByMaster(b, m, pids) {
		if off := m.matching(func(l logLine) bool { return strings.HasPrefix(l.Msg, "steering is off") }); len(off) > 0 {
			b.Skipf("steering is off: %s", off[0].Msg)
		}
		if time.Now().After(deadline) {
			b.Fatalf("sockets=%s: the master holds not every child's listener 10 s after they were ready", mode)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if off := m.matching(func(l logLine) bool { return strings.HasPrefix(l.Msg, "steering is off") }); len(off) > 0 {
		b.Skipf("steering is off: %s", off[0].Msg)
	}
	return &rescueMaster{master: m, metrics: maddr, pids: pids}
}

// heldByMaster reports whether the master has a descriptor of every
// listener of its address that a child holds: in master socket mode its
// own sockets; in child socket mode its copies of the children's.
func heldByMaster(b *testing.B, m *master, pids map[int]int) bool {
	b.Helper()
	_, port, _ := net.SplitHostPort(m.addr)
	p, _ := strconv.Atoi(port)
	queues, err := sockopt.ListenQueues(p)
	if err != nil {
		b.Fatal(err)
	}
	mine := socketInodes(m.cmd.Process.Pid)
	for _, pid := range pids {
		held := false
		for ino := range socketInodes(pid) {
			if _, listener := queues[ino]; listener && mine[ino] {
				held = true
			}
		}
		if !held {
			return false
		}
	}
	return true
}

// socketInodes returns the inodes of pid's sockets.
func socketInodes(pid int) map[uint64]bool {
	inodes := map[uint64]bool{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	return inodes
}

// contOnCleanup SIGCONTs pid when the benchmark ends, before the
// master's own cleanup (registered earlier, so run later) kills it; the
// returned function does it now, once.
func contOnCleanup(b *testing.B, pid int) func() {
	cont := sync.OnceFunc(func() { syscall.Kill(pid, syscall.SIGCONT) })
	b.Cleanup(cont)
	return cont
}

// rescueWrkRun runs wrk against a fresh master, started right at the
// SIGSTOP of the victim's child if stop, and samples the victim's queue
// from the metrics every 100 ms from 1 s to 5 s.
func rescueWrkRun(b *testing.B, wrk, mode string, stop bool) wrkRescueRun {
	b.Helper()
	m := startRescueMaster(b, mode)
	victim := m.pids[rescueVictim]
	cont := contOnCleanup(b, victim)
	inode := victimListener(b, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(slices.Clone(rescueWrkArgs), "http://"+m.addr+"/")
	cmd := exec.CommandContext(ctx, wrk, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if stop {
		if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
			b.Fatalf("SIGSTOP to slot %d's child %d: %v", rescueVictim, victim, err)
		}
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start wrk: %v", err)
	}
	r := wrkRescueRun{stopped: stop, queueAt1s: -1}
	for i := 10; i <= 50; i++ {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		time.Sleep(time.Until(at))
		q, err := listenerQueue(inode)
		if lag := time.Since(at); lag > r.sampleLag {
			r.sampleLag = lag
		}
		if err != nil {
			b.Fatalf("sample the stopped slot's queue: %v", err)
		}
		if i == 10 {
			r.queueAt1s = q
		}
		r.queueMax = max(r.queueMax, q)
		r.samples = append(r.samples, q)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("wrk: %v: %s", err, out.String())
	}
	r.wrk = parseWrkReport([]byte(out.String()))
	if r.wrk.Requests == 0 && !stop {
		b.Fatalf("no requests in wrk's report:\n%s", out.String())
	}
	r.rescued = loggedRescued(m.master)
	cont()
	m.stop()
	return r
}

// rescueLine is one rescue log line of the master.
type rescueLine struct {
	at time.Time // the master's clock
	n  int       // connections moved
}

// rescueLines returns the master's rescue log lines so far.
func rescueLines(m *master) []rescueLine {
	m.mu.Lock()
	raw := m.raw.String()
	m.mu.Unlock()
	var out []rescueLine
	for line := range strings.Lines(raw) {
		var l struct {
			Msg         string    `json:"msg"`
			Time        time.Time `json:"time"`
			Connections int       `json:"connections"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == rescueMsg {
			out = append(out, rescueLine{at: l.Time, n: l.Connections})
		}
	}
	return out
}

// loggedRescued sums the "connections" of the master's rescue log lines:
// a scrape of prefork_child_rescued_connections_total right after a load
// of new connections takes seconds, as the master then reads the tens of
// thousands of TIME_WAIT sockets of /proc/net/tcp.
func loggedRescued(m *master) int {
	n := 0
	for _, l := range rescueLines(m) {
		n += l.n
	}
	return n
}

// rescueMsg is the master's log line of a rescue.
const rescueMsg = "moved the connections queued on a stuck slot to the healthy slots"

// scrapeSlot returns the value of metric{slot="slot"} on the master's
// metrics endpoint.
func scrapeSlot(addr, metric string, slot int) (int, error) {
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("scrape the master's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read the master's metrics: %w", err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + `\{slot="` + strconv.Itoa(slot) + `"\} (\d+)$`)
	sm := re.FindSubmatch(body)
	if sm == nil {
		return 0, fmt.Errorf("no %s{slot=%q} in the master's metrics", metric, strconv.Itoa(slot))
	}
	return strconv.Atoi(string(sm[1]))
}

// rescueWrkTable formats the rounds of figures 1 and 2.
func rescueWrkTable(none, stopped []wrkRescueRun) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-8s %5s %8s %8s %7s %7s %7s %7s %7s %6s %6s %8s %8s  %s\n",
		"setup", "round", "requests", "req/s", "connect", "read", "write", "timeout", "non2xx", "q@1s", "qmax", "rescued", "lag ms",
		"queue every 100 ms from 1 s")
	for i := range none {
		for _, r := range []wrkRescueRun{none[i], stopped[i]} {
			name := "none"
			if r.stopped {
				name = "stopped"
			}
			fmt.Fprintf(&sb, "%-8s %5d %8d %8.0f %7d %7d %7d %7d %7d %6d %6d %8d %8.1f  %v\n",
				name, i+1, r.wrk.Requests, r.rate(), r.wrk.Connect, r.wrk.Read, r.wrk.Write, r.wrk.Timeout, r.wrk.Non2xx,
				r.queueAt1s, r.queueMax, r.rescued, ms(r.sampleLag), r.samples)
		}
	}
	return strings.TrimSuffix(sb.String(), "\n")
}

// bgLoad is a closed loop of clients sending GET / on a new connection
// each, until stopped.
type bgLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	per  []newConnResult
}

// startLoad starts clients goroutines loading addr; each request has
// rescueTimeout from its dial to the server's FIN.
func startLoad(addr string, clients int) *bgLoad {
	l := &bgLoad{stop: make(chan struct{}), per: make([]newConnResult, clients)}
	for i := range l.per {
		l.wg.Go(func() {
			r := &l.per[i]
			r.errs = map[string]int{}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				took, err := getOnNewConn(addr, time.Now().Add(rescueTimeout))
				r.took = append(r.took, took)
				if err != nil {
					r.errs[testkit.Classify(err)]++
					if r.firstErr == nil {
						r.firstErr = err
					}
					time.Sleep(time.Millisecond)
					continue
				}
				r.ok++
			}
		})
	}
	return l
}

// end stops the load, waits for its requests to end (at most
// rescueTimeout) and returns what it saw.
func (l *bgLoad) end() newConnResult {
	close(l.stop)
	l.wg.Wait()
	var all newConnResult
	for _, r := range l.per {
		all.add(r)
	}
	return all
}

// rescueQueuedLatency stops the victim's child of a fresh master, dials
// rescueDials GETs at once, and returns, of those that sit in its queue, the time
// from the dial to the whole answer of those. Under load, a background
// load of rescueLoadClients runs from before the stop to the end.
func rescueQueuedLatency(b *testing.B, mode string, load bool) []time.Duration {
	b.Helper()
	m := startRescueMaster(b, mode)
	victim := m.pids[rescueVictim]
	cont := contOnCleanup(b, victim)
	inode := victimListener(b, m)
	var bg *bgLoad
	if load {
		bg = startLoad(m.addr, rescueLoadClients)
		time.Sleep(500 * time.Millisecond) // the checks at their busy pace
	} else {
		time.Sleep(time.Second) // idle: the checks backed off
	}
	_, port, _ := net.SplitHostPort(m.addr)
	serverPort, _ := strconv.Atoi(port)

	type dialed struct {
		port int // the client's
		done chan time.Duration
		err  error
	}
	var conns []*dialed
	var wg sync.WaitGroup
	var failed atomic.Int64
	dial := func() *dialed {
		d := &dialed{done: make(chan time.Duration, 1)}
		start := time.Now()
		c, err := net.DialTimeout("tcp", m.addr, rescueTimeout)
		if err != nil {
			d.err = err
			failed.Add(1)
			d.done <- time.Since(start)
			return d
		}
		d.port = c.LocalAddr().(*net.TCPAddr).Port
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(start.Add(rescueTimeout))
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n"); err != nil {
				d.err = err
				failed.Add(1)
				d.done <- time.Since(start)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%w: %d", testkit.ErrStatus, resp.StatusCode)
				}
			}
			if err != nil {
				d.err = err
				failed.Add(1)
			}
			d.done <- time.Since(start)
		})
		return d
	}

	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		b.Fatalf("SIGSTOP to slot %d's child %d: %v", rescueVictim, victim, err)
	}
	stoppedAt := time.Now()
	waitStopped(b, victim)
	// All at once, before the first check can see the slot stuck: a
	// quarter of them land in the stopped child's queue.
	var mu sync.Mutex
	var dials sync.WaitGroup
	for range rescueDials {
		dials.Go(func() {
			d := dial()
			mu.Lock()
			conns = append(conns, d)
			mu.Unlock()
		})
	}
	dials.Wait()
	victimQueue, err := listenerQueue(inode)
	if err != nil {
		b.Fatal(err)
	}
	// Twice 10 ms apart: a healthy child accepts its own at once.
	onVictim := map[int]bool{}
	first := unacceptedPorts(b, serverPort)
	time.Sleep(10 * time.Millisecond)
	second := unacceptedPorts(b, serverPort)
	for _, d := range conns {
		if first[d.port] && second[d.port] {
			onVictim[d.port] = true
		}
	}
	searched := time.Since(stoppedAt)
	var took []time.Duration
	for _, d := range conns {
		t := <-d.done
		if onVictim[d.port] {
			took = append(took, t)
		}
	}
	wg.Wait()
	cont()
	if bg != nil {
		r := bg.end()
		if r.failures() > 0 {
			b.Logf("sockets=%s: background load: %d ok, %d failed %s", mode, r.ok, int(r.failures()), fmtErrs(r))
		}
	}
	if failed.Load() > 0 {
		b.Logf("sockets=%s: %d of the %d connections dialed after the stop failed", mode, failed.Load(), len(conns))
	}
	var rescues []string
	for _, l := range rescueLines(m.master) {
		rescues = append(rescues, fmt.Sprintf("%d at %v", l.n, l.at.Sub(stoppedAt).Round(time.Millisecond)))
	}
	b.Logf("sockets=%s load=%v: %d of %d connections dialed in %v after the stop seen queued on the stopped child (its queue then: %d); dial to answer of those p50 %.0f ms, max %.0f ms; rescues (connections at time from the stop): %v",
		mode, load, len(onVictim), len(conns), searched.Round(time.Millisecond), victimQueue,
		ms(quantileOf(took, 0.5)), ms(quantileOf(took, 1)), rescues)
	m.stop()
	return took
}

// unacceptedPorts returns the client ports of the established
// connections to serverPort that no process accepted yet: a server-side
// socket in an accept queue has no inode.
func unacceptedPorts(b *testing.B, serverPort int) map[int]bool {
	b.Helper()
	socks, err := tcpDiag(1)
	if err != nil {
		b.Fatal(err)
	}
	ports := map[int]bool{}
	for _, s := range socks {
		if s.sport == serverPort && s.inode == 0 {
			ports[s.dport] = true
		}
	}
	return ports
}

// churnResult is what figure 4's churn saw.
type churnResult struct {
	cycles   int       // SIGSTOPs
	rescues  int       // rescue log lines of the victim's slot
	logged   int       // connections in those lines
	rescued  int       // prefork_child_rescued_connections_total, every slot
	noRescue int       // stops with no rescue line within 5 s
	notBack  int       // SIGCONTs not followed by "slot takes new connections again" within 20 s
	toRescue []float64 // ms, SIGSTOP to the rescue line
	toBack   []float64 // ms, SIGCONT to the "takes new connections again" line
	took     time.Duration
	load     newConnResult
}

// rescueChurn stops and continues the victim's child of a fresh master
// under a background load until want rescue log lines, or
// rescueChurnBound. After each "slot takes new connections again" it
// waits 1 s before the next stop: the master counts a slot's rescues in
// a row until it has served for 10 stuck windows after its probe, and
// each one in a row doubles the wait for the next probe (up to 8 s for a
// child seen using no CPU); a stop within that second would measure that
// back-off, not a rescue.
func rescueChurn(b *testing.B, mode string, want int) churnResult {
	b.Helper()
	m := startRescueMaster(b, mode)
	victim := m.pids[rescueVictim]
	cont := contOnCleanup(b, victim)
	isRescue := func(l logLine) bool { return l.Msg == rescueMsg && l.Slot == rescueVictim }
	isBack := func(l logLine) bool { return l.Msg == "slot takes new connections again" && l.Slot == rescueVictim }
	bg := startLoad(m.addr, rescueChurnClient)
	time.Sleep(300 * time.Millisecond)
	var r churnResult
	start := time.Now()
	for len(m.matching(isRescue)) < want && time.Since(start) < rescueChurnBound {
		rescues, backs := len(m.matching(isRescue)), len(m.matching(isBack))
		t0 := time.Now()
		if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
			b.Fatalf("SIGSTOP to slot %d's child %d: %v", rescueVictim, victim, err)
		}
		r.cycles++
		if m.waitCount(5*time.Second, rescues+1, isRescue) {
			r.toRescue = append(r.toRescue, ms(time.Since(t0)))
		} else {
			r.noRescue++
		}
		t1 := time.Now()
		if err := syscall.Kill(victim, syscall.SIGCONT); err != nil {
			b.Fatalf("SIGCONT to slot %d's child %d: %v", rescueVictim, victim, err)
		}
		if m.waitCount(20*time.Second, backs+1, isBack) {
			r.toBack = append(r.toBack, ms(time.Since(t1)))
		} else {
			r.notBack++
		}
		time.Sleep(time.Second)
	}
	r.took = time.Since(start)
	r.rescues = len(m.matching(isRescue))
	r.load = bg.end()
	r.logged = loggedRescued(m.master)
	for slot := range rescueWorkers {
		n, err := scrapeSlot(m.metrics, "prefork_child_rescued_connections_total", slot)
		if err != nil {
			b.Fatal(err)
		}
		r.rescued += n
	}
	cont()
	m.stop()
	return r
}

// waitCount waits until match accepts n log lines, and reports whether
// it did within timeout.
func (m *master) waitCount(timeout time.Duration, n int, match func(logLine) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		change := m.change
		m.mu.Unlock()
		if len(m.matching(match)) >= n {
			return true
		}
		select {
		case <-change:
		case <-deadline.C:
			return false
		case <-m.exited:
			m.tb.Fatalf("master exited (%v) while waiting for its log", m.cmd.ProcessState)
		}
	}
}

// quantileOf returns the q-quantile of ds (nearest rank), or 0 for none.
func quantileOf(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// diagSock is one TCP socket of a sock_diag dump.
type diagSock struct {
	sport, dport int
	rqueue       uint32 // a listener's accept queue
	inode        uint64 // 0: no process holds it (queued, not accepted)
}

// tcpDiag returns the IPv4 TCP sockets in state (1 ESTABLISHED, 10
// LISTEN), from sock_diag: unlike /proc/net/tcp, it does not walk the
// tens of thousands of TIME_WAIT sockets a load of new connections
// leaves, so it takes well under a millisecond.
func tcpDiag(state int) ([]diagSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag timeout: %w", err)
	}
	ne := binary.NativeEndian
	req := make([]byte, unix.NLMSG_HDRLEN+56) // + struct inet_diag_req_v2
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[unix.NLMSG_HDRLEN] = unix.AF_INET
	req[unix.NLMSG_HDRLEN+1] = unix.IPPROTO_TCP
	ne.PutUint32(req[unix.NLMSG_HDRLEN+4:], 1<<state)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []diagSock
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			size := int(ne.Uint32(b[0:]))
			if size < unix.NLMSG_HDRLEN || size > len(b) {
				return nil, fmt.Errorf("sock_diag: bad message length %d", size)
			}
			body := b[unix.NLMSG_HDRLEN:size]
			switch ne.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: error %d", int32(ne.Uint32(body)))
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(body) >= 72 { // struct inet_diag_msg
					out = append(out, diagSock{
						sport:  int(binary.BigEndian.Uint16(body[4:])),
						dport:  int(binary.BigEndian.Uint16(body[6:])),
						rqueue: ne.Uint32(body[56:]),
						inode:  uint64(ne.Uint32(body[68:])),
					})
				}
			}
			b = b[min((size+3)&^3, len(b)):]
		}
	}
}

// listenerQueue returns the accept queue of the listener with inode.
func listenerQueue(inode uint64) (int, error) {
	socks, err := tcpDiag(10)
	if err != nil {
		return 0, err
	}
	for _, s := range socks {
		if s.inode == inode {
			return int(s.rqueue), nil
		}
	}
	return 0, fmt.Errorf("no listener with inode %d", inode)
}

// victimListener returns the inode of the listener on m's port that the
// victim's child holds.
func victimListener(b *testing.B, m *rescueMaster) uint64 {
	b.Helper()
	_, port, _ := net.SplitHostPort(m.addr)
	p, _ := strconv.Atoi(port)
	socks, err := tcpDiag(10)
	if err != nil {
		b.Fatal(err)
	}
	held := socketInodes(m.pids[rescueVictim])
	var found []uint64
	for _, s := range socks {
		if s.sport == p && held[s.inode] {
			found = append(found, s.inode)
		}
	}
	if len(found) != 1 {
		b.Fatalf("slot %d's child holds %d listeners on %s, want 1", rescueVictim, len(found), m.addr)
	}
	return found[0]
}
