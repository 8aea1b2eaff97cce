package bench

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// The load and the setups of BenchmarkSteer.
const (
	steerWorkers = 4
	steerVictim  = 2 // the slot whose child is stopped
	steerClients = 16
	steerWindow  = 3 * time.Second // load per setup and round
	steerTurns   = 12              // slices per setup and round with none stopped
	steerTimeout = 5 * time.Second // per request, dial to the server's FIN
	steerRounds  = 3               // per iteration
	steerSettle  = 300 * time.Millisecond
	steerMaxReqs = 1_000_000 // a bound per load, far above what 3 s can serve
	steerSlow    = time.Second
)

// steerSetup is one of the four setups of BenchmarkSteer.
type steerSetup struct {
	steer   string // --steer: on or off
	stopped bool   // the victim slot's child is SIGSTOPped during the load
	runs    []newConnResult
	steered []time.Duration // on, stopped: SIGSTOP to the "steering away" line
}

// key names the setup in metric units: on-none, off-1stopped.
func (s *steerSetup) key() string {
	if s.stopped {
		return s.steer + "-1stopped"
	}
	return s.steer + "-none"
}

// BenchmarkSteer: what steering (--steer) does for new connections when
// one child of four is stuck, and what it costs when none is. Four
// setups, each a fresh master with 4 children in master socket mode per
// round: steer on and off, each with every child serving and with slot
// 2's child SIGSTOPped. The load is the (wrk -c32 with
// Connection: close), scaled to this client: 16 goroutines sending GET /
// back to back, each request on a new connection with Connection: close,
// 3 s per setup and round; every request is timed from its dial to its
// whole answer, and given 5 s in all, so that one stuck on the stopped
// child counts as slow (and as a timeout error) rather than hanging the
// benchmark.
//
// With none stopped, the cost of the program is a few percent at most,
// far below the drift of a shared machine between two 3 s runs. So, as
// in BenchmarkDataPath, both masters of a round stay up together and are
// loaded in turn in 12 slices of 250 ms each, A B B A A B..., and the
// round's ratio on/off comes from those same 6 s. The idle one costs next
// to nothing meanwhile (the steering master's health tick is part of
// both).
//
// With one stopped, a slice would be held up by the requests stuck for
// 5 s; the two setups run one after the other instead, each 3 s in one
// piece, on first in even rounds and off first in odd ones (the gain is
// two orders of magnitude, not a few percent). Each stops the child once
// the master is warm, waits until every thread of it stopped, queues a
// few connections on its socket (steering judges a slot stuck only when
// connections wait on it and none is accepted for 100 ms; they stay
// queued during the load, as they would in production), and waits
// 300 ms; with steering on, it then also checks that the master logged
// slot 2 as steered away. The child is SIGCONTed before its master is
// stopped, and in the cleanup whatever happens.
//
// An iteration runs 3 rounds (-benchtime 1x is enough). Reported per
// setup, as the median over the rounds: req/s (requests answered 200
// within the load's time, per second, as wrk counts), p50 and p99 in ms
// and the fraction over 1 s (of every request started, a failed one
// counting with the time it took to fail), and the failed requests. And
// the ratios steer on/off of req/s, each the median of the rounds' own
// ratios: "on/off-none" is the cost of the program (the goal is at least
// 0.99), "on/off-1stopped" the gain. Nothing is asserted of the figures.
func BenchmarkSteer(b *testing.B) {
	none := [2]*steerSetup{{steer: "on"}, {steer: "off"}}
	stopped := [2]*steerSetup{{steer: "on", stopped: true}, {steer: "off", stopped: true}}
	var costs, gains []float64 // on/off req/s per round
	round := 0
	for b.Loop() {
		for range steerRounds {
			runSteerNone(b, none, round)
			for k := range 2 {
				s := stopped[(round+k)%2]
				s.runs = append(s.runs, runSteerStopped(b, s))
			}
			costs = append(costs, none[0].runs[round].rate()/none[1].runs[round].rate())
			gains = append(gains, stopped[0].runs[round].rate()/stopped[1].runs[round].rate())
			round++
		}
	}
	setups := []*steerSetup{none[0], none[1], stopped[0], stopped[1]}
	b.ReportMetric(0, "ns/op")
	for _, s := range setups {
		b.ReportMetric(s.median(newConnResult.rate), "req/s-"+s.key())
		b.ReportMetric(s.median(newConnResult.p50), "ms/p50-"+s.key())
		b.ReportMetric(s.median(newConnResult.p99), "ms/p99-"+s.key())
		b.ReportMetric(s.median(newConnResult.slowFraction), "frac-over-1s-"+s.key())
		b.ReportMetric(s.median(newConnResult.failures), "errors-"+s.key())
	}
	b.ReportMetric(median(costs), "on/off-none")
	b.ReportMetric(median(gains), "on/off-1stopped")
	b.Logf("%d children, master sockets; %d clients, a new connection per request, %v per setup and round, %v per request; medians of %d rounds:\n%s",
		steerWorkers, steerClients, steerWindow, steerTimeout, round, steerTable(setups, true))
	b.Logf("steer on/off req/s, median of the rounds' ratios: none stopped %.3f (goal ≥ 0.99; per round %s; ratio of medians %.3f), one stopped %.1f (per round %s; ratio of medians %.1f)",
		median(costs), fmtRatios(costs), none[0].median(newConnResult.rate)/none[1].median(newConnResult.rate),
		median(gains), fmtRatios(gains), stopped[0].median(newConnResult.rate)/stopped[1].median(newConnResult.rate))
	b.Logf("steer on: from SIGSTOP to slot %d logged as steered away, per round: %v", steerVictim, stopped[0].steered)
	if testing.Verbose() { // a benchmark's log is cut at 10 lines otherwise
		b.Logf("per round:\n%s", steerTable(setups, false))
	}
}

// runSteerNone runs one round of the two setups with none stopped, steer
// on and off: both masters up together, loaded in turn in steerTurns
// slices each, starting with the other one every round.
func runSteerNone(b *testing.B, setups [2]*steerSetup, round int) {
	b.Helper()
	var masters [2]*master
	for j, s := range setups {
		masters[j], _ = startSteerMaster(b, s.steer)
	}
	var res [2]newConnResult
	for t := range steerTurns {
		for k := range 2 {
			j := (round + t + k) % 2
			res[j].add(newConnLoad(masters[j].addr, steerClients, steerWindow/steerTurns, steerTimeout, steerMaxReqs))
		}
	}
	for j, s := range setups {
		masters[j].stop()
		s.runs = append(s.runs, res[j])
	}
}

// runSteerStopped runs one round of a setup with one child stopped: a
// master, the victim slot's child stopped and connections queued on its
// socket, steering given steerSettle to act, then the load; then the
// child is continued and the master stopped.
func runSteerStopped(b *testing.B, s *steerSetup) newConnResult {
	b.Helper()
	m, victim := startSteerMaster(b, s.steer)
	// Registered after the master's own cleanup, so it runs before it.
	cont := sync.OnceFunc(func() { syscall.Kill(victim, syscall.SIGCONT) })
	b.Cleanup(cont)
	stoppedAt := time.Now()
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		b.Fatalf("SIGSTOP to slot %d's child %d: %v", steerVictim, victim, err)
	}
	waitStopped(b, victim)
	primed := queueOnStopped(b, m.addr)
	defer closeAll(primed)
	time.Sleep(steerSettle)
	if s.steer == "on" {
		l := m.waitLog(5*time.Second, 1, "slot "+strconv.Itoa(steerVictim)+" steered away", func(l logLine) bool {
			return l.Msg == "steering new connections away from slot" && l.Slot == steerVictim
		})[0]
		s.steered = append(s.steered, l.Time.Sub(stoppedAt).Round(time.Millisecond))
	}
	r := newConnLoad(m.addr, steerClients, steerWindow, steerTimeout, steerMaxReqs)
	cont()
	m.stop()
	return r
}

// startSteerMaster starts a master with steerWorkers children in master
// socket mode and --steer steer, waits until they are ready, warms them
// up (first requests fault in pages and grow stacks), and returns it with
// the pid of the victim slot's child.
func startSteerMaster(b *testing.B, steer string) (*master, int) {
	b.Helper()
	m := startMaster(b, steerWorkers, "--sockets", "master", "--steer", steer)
	victim := readyBySlot(m.waitReady(time.Minute, steerWorkers))[steerVictim]
	w := newConnLoad(m.addr, steerClients, 200*time.Millisecond, steerTimeout, steerMaxReqs)
	if w.failures() != 0 || w.ok == 0 {
		b.Fatalf("steer %s: warm-up: %d ok, %d failed %v (first: %v)", steer, w.ok, int(w.failures()), w.errs, w.firstErr)
	}
	return m, victim
}

// median returns the median over s's rounds of f.
func (s *steerSetup) median(f func(newConnResult) float64) float64 {
	var xs []float64
	for _, r := range s.runs {
		xs = append(xs, f(r))
	}
	return median(xs)
}

// waitStopped waits (up to 5 s) until every thread of pid is stopped:
// SIGSTOP is asynchronous, and a thread still running may accept one more
// connection.
func waitStopped(tb testing.TB, pid int) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !testkit.Stopped(pid) {
		if time.Now().After(deadline) {
			tb.Fatalf("child %d: not every thread stopped 5 s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// queueOnStopped opens connections to addr, each with a request, 8 at a
// time, until one stays in a listener's accept queue: with one slot's
// child stopped, the other children take theirs at once, so a queue that
// stays is the stopped slot's. It gives up after 64 connections. The
// caller closes them.
func queueOnStopped(tb testing.TB, addr string) []net.Conn {
	tb.Helper()
	var conns []net.Conn
	for len(conns) < 64 {
		for range 8 {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				closeAll(conns)
				tb.Fatalf("queue a connection on the stopped child: %v", err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n")
			conns = append(conns, c)
		}
		time.Sleep(50 * time.Millisecond)
		if acceptQueued(tb, addr) > 0 {
			return conns
		}
	}
	closeAll(conns)
	tb.Fatalf("none of %d connections stayed queued on %s", len(conns), addr)
	return nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// acceptQueued returns the connections waiting in the accept queues of
// the sockets listening on addr's port, from /proc/net/tcp, where a
// listener's rx_queue is its accept queue.
func acceptQueued(tb testing.TB, addr string) int {
	tb.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := testkit.AcceptQueued(p)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// newConnResult is what one new-connection load saw.
type newConnResult struct {
	ok       int             // answered 200
	inWindow int             // answered 200 before the window ended
	window   time.Duration   // how long requests were started
	took     []time.Duration // every request, failed ones to their failure; sorted
	errs     map[string]int  // by testkit.Classify
	firstErr error
}

// add adds o's requests to r's, and o's window to r's.
func (r *newConnResult) add(o newConnResult) {
	r.ok += o.ok
	r.inWindow += o.inWindow
	r.window += o.window
	r.took = append(r.took, o.took...)
	slices.Sort(r.took)
	if r.errs == nil {
		r.errs = map[string]int{}
	}
	for k, n := range o.errs {
		r.errs[k] += n
	}
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

func (r newConnResult) failures() float64 {
	n := 0
	for _, c := range r.errs {
		n += c
	}
	return float64(n)
}

// rate is the answers within the window per second of it.
func (r newConnResult) rate() float64 { return float64(r.inWindow) / r.window.Seconds() }

// quantile returns the q-quantile of the requests' times (nearest rank).
func (r newConnResult) quantile(q float64) time.Duration {
	if len(r.took) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(r.took)))) - 1
	return r.took[min(max(i, 0), len(r.took)-1)]
}

func (r newConnResult) requests() float64 { return float64(len(r.took)) }
func (r newConnResult) p50() float64      { return ms(r.quantile(0.50)) }
func (r newConnResult) p99() float64      { return ms(r.quantile(0.99)) }
func (r newConnResult) worst() float64    { return ms(r.quantile(1)) }

// slowFraction is the fraction of the requests that took over steerSlow.
func (r newConnResult) slowFraction() float64 {
	if len(r.took) == 0 {
		return 0
	}
	fast, _ := slices.BinarySearch(r.took, steerSlow+1)
	return float64(len(r.took)-fast) / float64(len(r.took))
}

// newConnLoad sends GET / to addr from clients goroutines, back to back,
// each request on a new connection with Connection: close, starting
// requests for window or until maxRequests were started, and times every
// one. A request has timeout in all, from its dial to the server's FIN;
// the requests started in the window run to their end, so the load lasts
// at most window plus timeout.
func newConnLoad(addr string, clients int, window, timeout time.Duration, maxRequests int64) newConnResult {
	var started atomic.Int64
	per := make([]newConnResult, clients)
	end := time.Now().Add(window)
	var wg sync.WaitGroup
	for i := range per {
		wg.Go(func() {
			r := &per[i]
			r.errs = map[string]int{}
			for time.Now().Before(end) && started.Add(1) <= maxRequests {
				t0 := time.Now()
				took, err := getOnNewConn(addr, t0.Add(timeout))
				r.took = append(r.took, took)
				if err != nil {
					r.errs[testkit.Classify(err)]++
					if r.firstErr == nil {
						r.firstErr = err
					}
					time.Sleep(time.Millisecond) // no tight loop on a refusing port
					continue
				}
				r.ok++
				if t0.Add(took).Before(end) {
					r.inWindow++
				}
			}
		})
	}
	wg.Wait()
	all := newConnResult{window: window}
	for _, r := range per {
		all.add(r)
	}
	return all
}

// getOnNewConn dials addr, sends GET / with Connection: close, and reads
// the whole answer, all before deadline. It returns the time until the
// answer was read (or the request failed), then reads on until the
// server's FIN, so that the server's side keeps the TIME_WAIT and the
// client's ephemeral ports last. testkit.RoundTrip is not used: it sets a
// deadline of its own.
func getOnNewConn(addr string, deadline time.Time) (time.Duration, error) {
	start := time.Now()
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n"); err != nil {
		return time.Since(start), err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return time.Since(start), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if resp.StatusCode != http.StatusOK {
		return took, fmt.Errorf("%w: %d", testkit.ErrStatus, resp.StatusCode)
	}
	io.Copy(io.Discard, br)
	return took, nil
}

// steerTable formats the medians of every setup over its rounds, or every
// round of every setup.
func steerTable(setups []*steerSetup, medians bool) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-12s %5s %8s %8s %8s %8s %8s %8s %7s  %s\n",
		"setup", "round", "requests", "req/s", "p50 ms", "p99 ms", "max ms", ">1s", "failed", "errors")
	row := func(name, round string, requests, rate, p50, p99, worst, slow, failed float64, errs string) {
		fmt.Fprintf(&sb, "%-12s %5s %8.0f %8.0f %8.2f %8.2f %8.1f %8.4f %7.0f  %s\n",
			name, round, requests, rate, p50, p99, worst, slow, failed, errs)
	}
	for _, s := range setups {
		if medians {
			med := func(f func(newConnResult) float64) float64 { return s.median(f) }
			row(s.key(), "med", med(newConnResult.requests), med(newConnResult.rate), med(newConnResult.p50),
				med(newConnResult.p99), med(newConnResult.worst), med(newConnResult.slowFraction),
				med(newConnResult.failures), "")
			continue
		}
		for i, r := range s.runs {
			row(s.key(), strconv.Itoa(i+1), r.requests(), r.rate(), r.p50(), r.p99(), r.worst(), r.slowFraction(),
				r.failures(), fmtErrs(r))
		}
	}
	return strings.TrimSuffix(sb.String(), "\n")
}

// fmtErrs formats the failures by kind, in name order, with the first
// error.
func fmtErrs(r newConnResult) string {
	if len(r.errs) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.errs)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, r.errs[k]))
	}
	return strings.Join(parts, " ") + fmt.Sprintf(" (first: %v)", r.firstErr)
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}
