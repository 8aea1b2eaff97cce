package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// The figures of issue 15 (rollouts).
const (
	// rolloutWorkers is N of BenchmarkRolloutMemory.
	rolloutWorkers = 8
	// rolloutMemReloads is how many reloads BenchmarkRolloutMemory runs
	// per setup; it reports their medians.
	rolloutMemReloads = 5
	// rssEvery is how often the children's resident memory is summed
	// during a reload.
	rssEvery = 10 * time.Millisecond
	// rolloutReloadsEnv sets how many rolling reloads
	// BenchmarkRolloutFailures runs per setup (the figure is for
	// 20).
	rolloutReloadsEnv     = "PREFORK_ROLLOUT_RELOADS"
	rolloutReloadsDefault = 20
)

// rolloutStrategy is a reload strategy as `master run` flags.
type rolloutStrategy struct {
	name string
	args []string
}

var rolloutStrategies = []rolloutStrategy{
	{name: "generation", args: []string{"--reload-strategy", "generation"}},
	{name: "rolling,surge=1", args: []string{"--reload-strategy", "rolling", "--max-surge", "1"}},
	{name: "rolling,surge=2", args: []string{"--reload-strategy", "rolling", "--max-surge", "2"}},
}

// memoryRow is what one setup of BenchmarkRolloutMemory measured.
type memoryRow struct {
	name        string
	steadyMiB   float64 // the median steady total, before a reload
	ratio       float64 // median peak total during a reload / steady total
	maxRatio    float64
	maxLive     int     // the most live children seen at once
	reloadMS    float64 // median wall time of `master reload`
	maxReloadMS float64
}

// BenchmarkRolloutMemory: what a reload costs in memory and time, N = 8,
// for a generation reload and rolling ones with --max-surge 1 and 2
// (issue 15's figures). The children are the reference child with
// -ballast 64MiB (64 MiB allocated and touched before READY, so a
// child's resident size is known and dominates), and without ballast.
// For each setup, 5 reloads by `master reload`, without traffic; before
// each, the steady total (the median of 10 sums 20 ms apart, 8 children
// live); during each, from the command's start until every child of the
// old generation has exited, the sum of VmRSS (/proc/PID/status) over the
// master's child processes every 10 ms.
//
// Reported per setup: peak/steady (median and max over the reloads; the
// goal for rolling with surge 1 is at most (N+1)/N = 1.125), the steady
// total in MiB, the most live children at once, and the median and max
// wall time of `master reload` (until it prints "generation N serves").
// A table of all setups ends the run.
func BenchmarkRolloutMemory(b *testing.B) {
	rows := map[string]memoryRow{}
	var order []string
	for _, ballast := range []string{"64MiB", "0"} {
		for _, s := range rolloutStrategies {
			name := fmt.Sprintf("ballast=%s,strategy=%s", ballast, s.name)
			b.Run(name, func(b *testing.B) {
				row := memoryRun(b, ballast, s, rolloutMemReloads)
				row.name = name
				for b.Loop() {
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(row.ratio, "peak/steady")
				b.ReportMetric(row.maxRatio, "max-peak/steady")
				b.ReportMetric(row.steadyMiB, "MiB-steady")
				b.ReportMetric(float64(row.maxLive), "max-live")
				b.ReportMetric(row.reloadMS, "ms/reload")
				b.ReportMetric(row.maxReloadMS, "ms/max-reload")
				if _, ok := rows[name]; !ok {
					order = append(order, name)
				}
				rows[name] = row
			})
		}
	}
	var t bytes.Buffer
	w := tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "N=%d, %d reloads each\tsteady MiB\tpeak/steady (median)\tpeak/steady (max)\tmax live\treload ms (median)\treload ms (max)\n",
		rolloutWorkers, rolloutMemReloads)
	for _, name := range order {
		r := rows[name]
		fmt.Fprintf(w, "%s\t%.0f\t%.3f\t%.3f\t%d\t%.0f\t%.0f\n", r.name, r.steadyMiB, r.ratio, r.maxRatio, r.maxLive, r.reloadMS, r.maxReloadMS)
	}
	w.Flush()
	// On stdout: a parent benchmark's own log shows only under -v.
	fmt.Printf("rollouts' memory and time (goal for rolling, surge 1: peak/steady at most %.3f):\n%s",
		float64(rolloutWorkers+1)/rolloutWorkers, t.String())
}

// memoryRun starts a master of rolloutWorkers reference children with
// the ballast given and the strategy's flags, and measures reloads
// reloads.
func memoryRun(b *testing.B, ballast string, s rolloutStrategy, reloads int) memoryRow {
	const n = rolloutWorkers
	args := append(slices.Clone(s.args), "--", filepath.Join(bin, "child"), "--ballast", ballast)
	m := startMaster(b, n, args...)
	m.waitReady(2*time.Minute, n)
	pid := m.cmd.Process.Pid
	var ratios, walls, steadies []float64
	maxLive := 0
	for gen := 1; gen <= reloads; gen++ {
		time.Sleep(200 * time.Millisecond) // let the children's start-up work settle
		steady := steadyRSS(b, pid, n)
		peak := newRSSPeak(pid)
		start := time.Now()
		out, err := runReload(m)
		wall := time.Since(start)
		if err != nil || !strings.Contains(out, fmt.Sprintf("generation %d serves", gen+1)) {
			peak.stop()
			b.Fatalf("%s reload %d: %v: %s", s.name, gen, err, out)
		}
		m.waitLog(time.Minute, n, fmt.Sprintf(`"child exited" of generation %d`, gen),
			func(l logLine) bool { return l.Msg == "child exited" && l.Generation == gen })
		total, live := peak.stop()
		if bad := m.matching(func(l logLine) bool { return l.Msg == "child exited unexpectedly" }); len(bad) != 0 {
			b.Fatalf("%d children exited unexpectedly, the first pid %d", len(bad), bad[0].PID)
		}
		ratios = append(ratios, float64(total)/float64(steady))
		walls = append(walls, ms(wall))
		steadies = append(steadies, float64(steady)/(1<<20))
		maxLive = max(maxLive, live)
		b.Logf("%s, ballast %s, reload %d: steady %.1f MiB, peak %.1f MiB (%.3f), %d live at most, %v",
			s.name, ballast, gen, float64(steady)/(1<<20), float64(total)/(1<<20), ratios[len(ratios)-1], live, wall.Round(time.Millisecond))
	}
	m.stop()
	return memoryRow{steadyMiB: median(steadies), ratio: median(ratios), maxRatio: slices.Max(ratios),
		maxLive: maxLive, reloadMS: median(walls), maxReloadMS: slices.Max(walls)}
}

// runReload runs `master reload` against m, within 2 minutes, and
// returns its output.
func runReload(m *master, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"reload", "--control", m.control}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "master"), full...).CombinedOutput()
	return string(out), err
}

// steadyRSS returns the median of 10 sums of the children's resident
// memory, 20 ms apart; each must see n live children.
func steadyRSS(b *testing.B, masterPID, n int) int64 {
	b.Helper()
	var sums []float64
	for range 10 {
		total, live := childrenRSS(masterPID)
		if live != n {
			b.Fatalf("%d live children when steady, want %d", live, n)
		}
		sums = append(sums, float64(total))
		time.Sleep(20 * time.Millisecond)
	}
	return int64(median(sums))
}

// childrenRSS returns the sum of VmRSS over the master's child processes
// that run bin/child, in bytes, and how many of them had one (a zombie
// has none). A child not yet exec'd is left out: between its fork (a
// vfork, or the exec shim's clone) and its exec it shares or copies the
// master's memory, whose size is not the child's.
func childrenRSS(masterPID int) (total int64, live int) {
	child := filepath.Join(bin, "child")
	for _, pid := range testkit.ChildrenOf(masterPID) {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != child {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		if rss, ok := parseVmRSS(data); ok {
			total += rss
			live++
		}
	}
	return total, live
}

// parseVmRSS reads VmRSS, in bytes, from the text of /proc/PID/status;
// ok is false when it has none (a zombie's).
func parseVmRSS(status []byte) (int64, bool) {
	for line := range strings.Lines(string(status)) {
		v, found := strings.CutPrefix(line, "VmRSS:")
		if !found {
			continue
		}
		kb, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
		n, err := strconv.ParseInt(kb, 10, 64)
		if err != nil || unit != "kB" {
			return 0, false
		}
		return n << 10, true
	}
	return 0, false
}

// rssPeak samples childrenRSS every rssEvery until stop.
type rssPeak struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	max  int64
	live int
}

func newRSSPeak(masterPID int) *rssPeak {
	p := &rssPeak{done: make(chan struct{})}
	p.wg.Go(func() {
		tick := time.NewTicker(rssEvery)
		defer tick.Stop()
		for {
			total, live := childrenRSS(masterPID)
			p.mu.Lock()
			p.max, p.live = max(p.max, total), max(p.live, live)
			p.mu.Unlock()
			select {
			case <-tick.C:
			case <-p.done:
				return
			}
		}
	})
	return p
}

// stop ends the sampling and returns the highest total and the most live
// children seen.
func (p *rssPeak) stop() (int64, int) {
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max, p.live
}

// BenchmarkRolloutFailures: failed requests over PREFORK_ROLLOUT_RELOADS
// (default 20) rolling reloads with --max-surge 1 under continuous load,
// in each socket mode, each in a network namespace of its own: the setup
// and load of BenchmarkReloadFailures (4 workers, 16 keep-alive clients
// and 16 with a new connection per request, a reload after each 50
// answers), with --reload-strategy rolling. Reported per client kind: the
// failed requests in all (goal 0) and the requests answered, then a
// table.
func BenchmarkRolloutFailures(b *testing.B) {
	rolling := []string{"--reload-strategy", "rolling", "--max-surge", "1"}
	with := func(extra ...string) []string { return append(extra, rolling...) }
	setups := []reloadSetup{
		{name: "sockets=child,migrate=0,steer=off", migrate: 0, start: preforkSetup("child", with("--steer", "off")...)},
		{name: "sockets=child,migrate=0,steer=on", migrate: 0, start: preforkSetup("child", with("--steer", "on")...)},
		{name: "sockets=child,migrate=1,steer=off", migrate: 1, start: preforkSetup("child", with("--steer", "off")...)},
		{name: "sockets=master,migrate=0", migrate: 0, start: preforkSetup("master", with()...)},
	}
	reloads := rolloutReloads(b)
	results := map[string]failuresResult{}
	var order []string
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			if inNetns() {
				writeNetnsResult(b, reloadsUnderLoad(b, s, reloads, 4*time.Minute))
				for b.Loop() {
				}
				return
			}
			var r failuresResult
			runNetnsBench(b, s.migrate, 6*time.Minute, &r)
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(r.Reloads), "reloads")
			for k := range kinds {
				b.ReportMetric(float64(r.failed(k)), "failed-"+kindNames[k])
				b.ReportMetric(float64(r.OK[k]), "ok-"+kindNames[k])
			}
			b.Logf("%s: %d rolling reloads in %v; keep-alive: %d ok, %d failed %v %q; new connection per request: %d ok, %d failed %v %q",
				s.name, r.Reloads, r.Elapsed.Round(time.Millisecond),
				r.OK[keepAliveKind], r.failed(keepAliveKind), r.Failures[keepAliveKind], r.Samples[keepAliveKind],
				r.OK[newConnKind], r.failed(newConnKind), r.Failures[newConnKind], r.Samples[newConnKind])
			if _, ok := results[s.name]; !ok {
				order = append(order, s.name)
			}
			results[s.name] = r
		})
	}
	if inNetns() || len(order) == 0 {
		return
	}
	var t bytes.Buffer
	w := tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "rolling, surge 1, N=4\treloads\tseconds\tfailed keep-alive\tfailed new-connection\tok keep-alive\tok new-connection")
	for _, name := range order {
		r := results[name]
		fmt.Fprintf(w, "%s\t%d\t%.0f\t%d\t%d\t%d\t%d\n", name, r.Reloads, r.Elapsed.Seconds(),
			r.failed(keepAliveKind), r.failed(newConnKind), r.OK[keepAliveKind], r.OK[newConnKind])
	}
	w.Flush()
	fmt.Printf("failed requests over rolling reloads under load (goal 0):\n%s", t.String())
}

// rolloutReloads is PREFORK_ROLLOUT_RELOADS, or its default.
func rolloutReloads(b *testing.B) int {
	return countFromEnv(b, rolloutReloadsEnv, rolloutReloadsDefault, "reloads")
}
