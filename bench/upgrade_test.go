package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
)

// The setups of BenchmarkUpgrade and BenchmarkUpgradeRejected.
const (
	upgradeWorkers = 4
	// upgradesEnv sets how many upgrades in a row BenchmarkUpgrade runs
	// per setup (the figure is for 100).
	upgradesEnv     = "PREFORK_UPGRADES"
	upgradesDefault = 100
	// upgradeRejections is how many broken binaries
	// BenchmarkUpgradeRejected offers per setup.
	upgradeRejections = 20
	// upgradeNext is the version of the second master build.
	upgradeNext = "v99.0.0-next"
	// upgradeCmdBound bounds one `master upgrade` (it waits up to a
	// minute for the new master by itself).
	upgradeCmdBound = 2 * time.Minute
	// upgradedMsg is the new master's log line once its loop runs.
	upgradedMsg = "master upgraded in place"
	// rejectedMsg ends the master's log line of a rejected upgrade:
	// "upgrade rejected; ..." when refused at once, "upgrade failed; ..."
	// when the new binary's check failed.
	rejectedMsg = "; the master runs on as it was"
)

// upgradeLoad is one wrk load of the upgrade benchmarks.
type upgradeLoad struct {
	name string
	args []string // wrk's, without -d and the URL
}

// upgradeLoads are the issue's: `wrk -c32`, keep-alive and a new
// connection per request.
var upgradeLoads = []upgradeLoad{
	{name: "keepalive", args: []string{"-t2", "-c32", "--timeout", "2s"}},
	{name: "close", args: []string{"-t2", "-c32", "--timeout", "2s", "-H", "Connection: close"}},
}

// BenchmarkUpgrade measures the master's upgrade in place (issue 14,
// "Figures to report"), in each socket mode and under each load of
// upgradeLoads: a master of 4 reference children (steering as the
// default), wrk against it, then PREFORK_UPGRADES (default 100) `master
// upgrade --binary X` in a row, alternating a second build of the master
// (another version, linked with -X as e2e's upgradeBinaries does) and
// bin/master. Each must exit 0; after each, `master status --json` must
// show the same master pid, the same child pid in every slot, every
// slot's accepts not lower than before, and one more upgrade. Then wrk
// gets SIGINT and reports.
//
// Reported: failed requests (wrk's socket errors, connect, read, write
// and timeout, plus non-2xx answers; goal 0), the upgrades done, the
// median, p90 and max of exec_to_loop_ms (the old master's exec to the
// new master's loop running, from the "master upgraded in place" log
// line), and the median wall time of one `master upgrade` command (the
// check of the new binary, the exec, and its wait for the new master).
// The log line has the rest: the master's descriptors, threads and RSS
// before the first upgrade and after the last, and every count of wrk.
//
// A child that exits, a pid that changes or a count that goes down fails
// the benchmark (the log line says which); the figures are reported
// anyway. It skips without wrk.
func BenchmarkUpgrade(b *testing.B) {
	wrk := lookWrk(b)
	n := upgradeCount(b)
	next := buildMaster(b, b.TempDir(), "next", "-X=github.com/prefork/prefork/pkg/version.Version="+upgradeNext)
	for _, mode := range []string{"child", "master"} {
		b.Run("sockets="+mode, func(b *testing.B) {
			for _, load := range upgradeLoads {
				b.Run("load="+load.name, func(b *testing.B) {
					var r upgradeResult
					for b.Loop() {
						r = upgradesUnderLoad(b, wrk, mode, load, next, n)
					}
					r.report(b, mode, load)
				})
			}
		})
	}
}

// BenchmarkUpgradeRejected: under the same loads, 20 `master upgrade
// --binary X` alternating three broken binaries: a script that exits 1,
// a copy of the master without its execute bit, and a master that reads
// only an older format of the state (linked with
// supervisor.upgradeFormatText=0). Each must exit 1 with "upgrade
// rejected" and the binary's reason, and leave the master as it was:
// same pid, same children, no upgrade counted, accepts not going down.
// Reported: failed requests under wrk (goal 0), the rejections seen and
// the median wall time of one rejected `master upgrade`.
func BenchmarkUpgradeRejected(b *testing.B) {
	wrk := lookWrk(b)
	dir := b.TempDir()
	broken := brokenBinaries(b, dir)
	for _, mode := range []string{"child", "master"} {
		b.Run("sockets="+mode, func(b *testing.B) {
			for _, load := range upgradeLoads {
				b.Run("load="+load.name, func(b *testing.B) {
					var r rejectedResult
					for b.Loop() {
						r = rejectionsUnderLoad(b, wrk, mode, load, broken)
					}
					r.report(b, mode, load)
				})
			}
		})
	}
}

// lookWrk returns wrk's path, or skips.
func lookWrk(b *testing.B) string {
	b.Helper()
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not installed (apt-get install wrk adds it): ", err)
	}
	return wrk
}

// upgradeCount is how many upgrades BenchmarkUpgrade runs per setup.
func upgradeCount(b *testing.B) int { return countFromEnv(b, upgradesEnv, upgradesDefault, "upgrades") }

// countFromEnv is the positive count the variable env gives, or def when
// it is unset; what names the things counted, for the error.
func countFromEnv(b *testing.B, env string, def int, what string) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive count of %s", env, v, what)
	}
	return n
}

// buildMaster builds cmd/master with ldflags into dir/name, as e2e's
// upgradeBinaries does.
func buildMaster(b *testing.B, dir, name, ldflags string) string {
	b.Helper()
	out := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-ldflags="+ldflags, "-o", out, "github.com/prefork/prefork/cmd/master")
	if msg, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v: %s", name, err, msg)
	}
	return out
}

// brokenBinary is a binary the master must refuse to upgrade to, and
// the reason `master upgrade` must give.
type brokenBinary struct {
	name, path, reason string
}

// brokenBinaries writes, into dir, an executable that exits 1, a copy of
// bin/master without its execute bit, and builds a master that reads
// only an older format of the state.
func brokenBinaries(b *testing.B, dir string) []brokenBinary {
	b.Helper()
	// An executable that exits 1 (a copy of false(1)); a script is
	// refused before its check.
	falseData, err := os.ReadFile("/bin/false")
	if err != nil {
		b.Fatal(err)
	}
	exits1 := filepath.Join(dir, "exits1")
	if err := os.WriteFile(exits1, falseData, 0o755); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(bin, "master"))
	if err != nil {
		b.Fatal(err)
	}
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, data, 0o644); err != nil {
		b.Fatal(err)
	}
	oldstate := buildMaster(b, dir, "oldstate", "-X=github.com/prefork/prefork/pkg/supervisor.upgradeFormatText=0")
	return []brokenBinary{
		{name: "exits1", path: exits1, reason: "exited with code 1"},
		{name: "noexec", path: noexec, reason: "permission denied"},
		{name: "oldstate", path: oldstate, reason: "state format 1"},
	}
}

// procFigures are what a leak in the master would make grow.
type procFigures struct {
	FDs, Threads, RSSKiB int
}

func (f procFigures) String() string {
	return fmt.Sprintf("%d fds, %d threads, %.1f MiB RSS", f.FDs, f.Threads, float64(f.RSSKiB)/1024)
}

// readProcFigures reads pid's descriptors, threads and RSS from /proc.
func readProcFigures(tb testing.TB, pid int) procFigures {
	tb.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return parseProcFigures(len(fds), status)
}

// parseProcFigures reads Threads and VmRSS from a /proc/PID/status.
func parseProcFigures(fds int, status []byte) procFigures {
	f := procFigures{FDs: fds}
	for line := range strings.Lines(string(status)) {
		key, value, _ := strings.Cut(line, ":")
		n, _ := strconv.Atoi(strings.Fields(value + " 0")[0])
		switch key {
		case "Threads":
			f.Threads = n
		case "VmRSS":
			f.RSSKiB = n
		}
	}
	return f
}

// masterStatus runs `master status --json` against m.
func masterStatus(tb testing.TB, m *master) supervisor.Status {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "master"), "status", "--json", "--control", m.control).Output()
	if err != nil {
		tb.Fatalf("master status --json: %v: %s", err, out)
	}
	var st supervisor.Status
	if err := json.Unmarshal(out, &st); err != nil {
		tb.Fatalf("master status --json: %v: %s", err, out)
	}
	return st
}

// childPIDs returns the pid of each slot's child in st.
func childPIDs(st supervisor.Status) map[int]int {
	pids := map[int]int{}
	for _, c := range st.Children {
		pids[c.Slot] = c.PID
	}
	return pids
}

// totalAccepts sums the children's accepts in st.
func totalAccepts(st supervisor.Status) uint64 {
	var n uint64
	for _, c := range st.Children {
		n += c.Accepts
	}
	return n
}

// upgradeCmd is one `master upgrade` command's outcome.
type upgradeCmd struct {
	code           int // -1: killed at the bound
	stdout, stderr string
	took           time.Duration
}

// runUpgrade runs `master upgrade --binary binary` against m.
func runUpgrade(m *master, binary string) upgradeCmd {
	ctx, cancel := context.WithTimeout(context.Background(), upgradeCmdBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "master"), "upgrade", "--binary", binary, "--control", m.control)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := upgradeCmd{took: time.Since(t0), stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		r.code = -1
		r.stderr += err.Error()
	}
	return r
}

// wrkLoad is a wrk run in the background, stopped by SIGINT.
type wrkLoad struct {
	cmd     *exec.Cmd
	out     bytes.Buffer
	exited  chan struct{}
	waitErr error
}

// startWrk runs wrk with args against addr for at most bound; it is
// killed when the benchmark ends if still running.
func startWrk(b *testing.B, wrk, addr string, args []string, bound time.Duration) *wrkLoad {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound+time.Minute)
	full := append(slices.Clone(args), "-d", fmt.Sprintf("%ds", int(bound.Seconds())), "http://"+addr+"/")
	w := &wrkLoad{cmd: exec.CommandContext(ctx, wrk, full...), exited: make(chan struct{})}
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		cancel()
		b.Fatalf("start wrk: %v", err)
	}
	go func() { w.waitErr = w.cmd.Wait(); cancel(); close(w.exited) }()
	b.Cleanup(func() {
		select {
		case <-w.exited:
		default:
			w.cmd.Process.Kill()
			<-w.exited
		}
	})
	return w
}

// running reports whether wrk still runs.
func (w *wrkLoad) running() bool {
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// stop sends wrk SIGINT (it then reports) and parses its report.
func (w *wrkLoad) stop(b *testing.B) (wrkCounts, string) {
	b.Helper()
	w.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		b.Fatalf("wrk still running 10 s after SIGINT: %s", w.out.String())
	}
	if w.waitErr != nil {
		b.Fatalf("wrk: %v: %s", w.waitErr, w.out.String())
	}
	c := parseWrkReport(w.out.Bytes())
	if c.Requests == 0 {
		b.Fatalf("no requests in wrk's report:\n%s", w.out.String())
	}
	return c, w.out.String()
}

// upgradeLogLine is the part of the master's log lines around an
// upgrade that the benchmark reads.
type upgradeLogLine struct {
	Time         time.Time `json:"time"`
	Msg          string    `json:"msg"`
	Upgraded     bool      `json:"upgraded"`        // "master started" of a new master
	ExecToLoopMS float64   `json:"exec_to_loop_ms"` // "master upgraded in place"
}

// The log lines of an upgrade, in order: the old master's just before
// the exec, the new master's first, and the new master's once its loop
// runs.
const (
	execMsg    = "upgrade: the new binary passed its check; exec"
	startedMsg = "master started"
)

// upgradePhases are the times of each upgrade's log lines.
type upgradePhases struct {
	execToLoop    []time.Duration // exec_to_loop_ms of each upgradedMsg line
	execToStarted []time.Duration // execMsg line to the new master's startedMsg line
	startedToLoop []time.Duration // that line to the upgradedMsg line
}

// upgradeLogPhases reads the master's log lines of its upgrades so far.
func upgradeLogPhases(m *master) upgradePhases {
	m.mu.Lock()
	raw := m.raw.String()
	m.mu.Unlock()
	var p upgradePhases
	var execAt, startedAt time.Time
	for line := range strings.Lines(raw) {
		var l upgradeLogLine
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case l.Msg == execMsg:
			execAt = l.Time
		case l.Msg == startedMsg && l.Upgraded:
			startedAt = l.Time
			if !execAt.IsZero() {
				p.execToStarted = append(p.execToStarted, startedAt.Sub(execAt))
			}
		case l.Msg == upgradedMsg:
			p.execToLoop = append(p.execToLoop, time.Duration(l.ExecToLoopMS*float64(time.Millisecond)))
			if !startedAt.IsZero() {
				p.startedToLoop = append(p.startedToLoop, l.Time.Sub(startedAt))
			}
			execAt, startedAt = time.Time{}, time.Time{}
		}
	}
	return p
}

// childExits returns the master's log lines of a child's exit.
func childExits(m *master) []logLine {
	return m.matching(func(l logLine) bool { return strings.HasPrefix(l.Msg, "child exited") })
}

// upgradeWatch checks, after each upgrade or rejected one, that the
// master and its children went on.
type upgradeWatch struct {
	pid      int
	children map[int]int    // pid by slot, before the first
	accepts  map[int]uint64 // by slot, the latest seen
	problems []string
}

func newUpgradeWatch(st supervisor.Status) *upgradeWatch {
	w := &upgradeWatch{pid: st.PID, children: childPIDs(st), accepts: map[int]uint64{}}
	for _, c := range st.Children {
		w.accepts[c.Slot] = c.Accepts
	}
	return w
}

// check compares st, seen after attempt what, with what was before.
func (w *upgradeWatch) check(what string, st supervisor.Status, upgrades int) {
	if st.PID != w.pid {
		w.problems = append(w.problems, fmt.Sprintf("%s: master pid %d, was %d", what, st.PID, w.pid))
	}
	if got := childPIDs(st); fmt.Sprint(got) != fmt.Sprint(w.children) {
		w.problems = append(w.problems, fmt.Sprintf("%s: children %v, were %v", what, got, w.children))
	}
	if st.Upgrades != upgrades {
		w.problems = append(w.problems, fmt.Sprintf("%s: upgrades %d, want %d", what, st.Upgrades, upgrades))
	}
	for _, c := range st.Children {
		if c.Accepts < w.accepts[c.Slot] {
			w.problems = append(w.problems, fmt.Sprintf("%s: slot %d accepts went down from %d to %d", what, c.Slot, w.accepts[c.Slot], c.Accepts))
		}
		w.accepts[c.Slot] = c.Accepts
	}
}

// upgradeResult is what one setup of BenchmarkUpgrade saw.
type upgradeResult struct {
	upgrades       int
	wrk            wrkCounts
	phases         upgradePhases
	cmd            []time.Duration // each `master upgrade`'s wall time
	before, after  procFigures     // the master's, before the first and after the last upgrade
	pid            int
	children       map[int]int
	acceptsBefore  uint64 // the children's, before the first upgrade
	acceptsAfter   uint64 // after the last
	versions       []string
	childExits     int
	problems       []string
	took           time.Duration
	wrkRanOutEarly bool
}

// upgradesUnderLoad runs n upgrades of a fresh master under wrk.
func upgradesUnderLoad(b *testing.B, wrk, mode string, load upgradeLoad, next string, n int) upgradeResult {
	b.Helper()
	m := startMaster(b, upgradeWorkers, "--sockets", mode)
	m.waitReady(time.Minute, upgradeWorkers)
	w := startWrk(b, wrk, m.addr, load.args, time.Minute+time.Duration(n)*5*time.Second)
	time.Sleep(time.Second) // wrk's connections are up and serving
	first := masterStatus(b, m)
	watch := newUpgradeWatch(first)
	r := upgradeResult{pid: first.PID, children: childPIDs(first), acceptsBefore: totalAccepts(first),
		before: readProcFigures(b, first.PID), versions: []string{first.Version}}
	start := time.Now()
	for i := range n {
		binary, want := next, upgradeNext
		if i%2 == 1 {
			binary, want = filepath.Join(bin, "master"), first.Version
		}
		c := runUpgrade(m, binary)
		r.cmd = append(r.cmd, c.took)
		if c.code != 0 || !strings.Contains(c.stdout, "upgraded in place") {
			b.Fatalf("sockets=%s load=%s: upgrade %d to %s: exit %d, stdout %q, stderr %q",
				mode, load.name, i+1, binary, c.code, c.stdout, c.stderr)
		}
		st := masterStatus(b, m)
		watch.check(fmt.Sprintf("after upgrade %d", i+1), st, i+1)
		if st.Version != want {
			watch.problems = append(watch.problems, fmt.Sprintf("after upgrade %d: version %q, want %q", i+1, st.Version, want))
		}
		if i < 2 {
			r.versions = append(r.versions, st.Version)
		}
		if !m.waitCount(10*time.Second, i+1, func(l logLine) bool { return l.Msg == upgradedMsg }) {
			watch.problems = append(watch.problems, fmt.Sprintf("after upgrade %d: no %q log line in 10 s", i+1, upgradedMsg))
		}
		r.upgrades++
	}
	r.took = time.Since(start)
	r.after = readProcFigures(b, first.PID)
	time.Sleep(time.Second) // a late failure would show in wrk's counts
	r.wrkRanOutEarly = !w.running()
	last := masterStatus(b, m)
	watch.check("at the end", last, n)
	r.acceptsAfter = totalAccepts(last)
	r.wrk, _ = w.stop(b)
	r.phases = upgradeLogPhases(m)
	r.childExits = len(childExits(m))
	r.problems = watch.problems
	if r.wrkRanOutEarly {
		r.problems = append(r.problems, "wrk's -d ran out before the upgrades were done")
	}
	if r.childExits > 0 {
		r.problems = append(r.problems, fmt.Sprintf("%d children exited, the first: %+v", r.childExits, childExits(m)[0]))
	}
	for _, p := range r.problems {
		b.Error(p)
	}
	m.stop()
	return r
}

func (r upgradeResult) report(b *testing.B, mode string, load upgradeLoad) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.wrk.failed()), "failed")
	b.ReportMetric(float64(r.upgrades), "upgrades")
	b.ReportMetric(ms(quantileOf(r.phases.execToLoop, 0.5)), "exec-to-loop-ms/p50")
	b.ReportMetric(ms(quantileOf(r.phases.execToLoop, 0.9)), "exec-to-loop-ms/p90")
	b.ReportMetric(ms(quantileOf(r.phases.execToLoop, 1)), "exec-to-loop-ms/max")
	b.ReportMetric(ms(quantileOf(r.cmd, 0.5)), "upgrade-cmd-ms/p50")
	b.ReportMetric(float64(r.wrk.Requests)/max(r.wrk.Seconds, 1e-9), "req/s")
	b.Logf("sockets=%s load=%s: %d upgrades in %v (versions %s, alternating) under `wrk %s`: %d requests in %.1f s (%.0f/s), socket errors connect %d read %d write %d timeout %d, non-2xx %d: failed %d (goal 0); master pid %d kept, children %v kept, %d child exits, accepts %d before -> %d after; exec to loop (%d lines) median %.1f ms, p90 %.1f ms, max %.1f ms, min %.1f ms (the old master's %q line to the new master's %q line median %.1f ms, from there to its loop median %.1f ms); `master upgrade` median %.0f ms, p90 %.0f ms, max %.0f ms; master before: %v, after: %v; problems: %d",
		mode, load.name, r.upgrades, r.took.Round(time.Millisecond), strings.Join(r.versions, " -> "), strings.Join(load.args, " "),
		r.wrk.Requests, r.wrk.Seconds, float64(r.wrk.Requests)/max(r.wrk.Seconds, 1e-9),
		r.wrk.Connect, r.wrk.Read, r.wrk.Write, r.wrk.Timeout, r.wrk.Non2xx, r.wrk.failed(),
		r.pid, r.children, r.childExits, r.acceptsBefore, r.acceptsAfter,
		len(r.phases.execToLoop), ms(quantileOf(r.phases.execToLoop, 0.5)), ms(quantileOf(r.phases.execToLoop, 0.9)), ms(quantileOf(r.phases.execToLoop, 1)), ms(quantileOf(r.phases.execToLoop, 0)),
		execMsg, startedMsg, ms(quantileOf(r.phases.execToStarted, 0.5)), ms(quantileOf(r.phases.startedToLoop, 0.5)),
		ms(quantileOf(r.cmd, 0.5)), ms(quantileOf(r.cmd, 0.9)), ms(quantileOf(r.cmd, 1)),
		r.before, r.after, len(r.problems))
}

// rejectedResult is what one setup of BenchmarkUpgradeRejected saw.
type rejectedResult struct {
	attempts, rejected int
	wrk                wrkCounts
	cmd                []time.Duration
	before, after      procFigures
	pid                int
	children           map[int]int
	logged             int // rejectedMsg lines
	childExits         int
	problems           []string
}

// rejectionsUnderLoad offers a fresh master upgradeRejections broken
// binaries under wrk.
func rejectionsUnderLoad(b *testing.B, wrk, mode string, load upgradeLoad, broken []brokenBinary) rejectedResult {
	b.Helper()
	m := startMaster(b, upgradeWorkers, "--sockets", mode)
	m.waitReady(time.Minute, upgradeWorkers)
	w := startWrk(b, wrk, m.addr, load.args, time.Minute+upgradeRejections*5*time.Second)
	time.Sleep(time.Second)
	first := masterStatus(b, m)
	watch := newUpgradeWatch(first)
	r := rejectedResult{pid: first.PID, children: childPIDs(first), before: readProcFigures(b, first.PID)}
	for i := range upgradeRejections {
		bb := broken[i%len(broken)]
		c := runUpgrade(m, bb.path)
		r.attempts++
		r.cmd = append(r.cmd, c.took)
		if c.code == 1 && strings.Contains(c.stderr, "upgrade rejected") && strings.Contains(c.stderr, bb.reason) {
			r.rejected++
		} else {
			watch.problems = append(watch.problems, fmt.Sprintf("attempt %d (%s): exit %d, stdout %q, stderr %q; want exit 1, upgrade rejected: %s",
				i+1, bb.name, c.code, c.stdout, c.stderr, bb.reason))
		}
		watch.check(fmt.Sprintf("after attempt %d (%s)", i+1, bb.name), masterStatus(b, m), 0)
	}
	r.after = readProcFigures(b, first.PID)
	time.Sleep(time.Second)
	if !w.running() {
		watch.problems = append(watch.problems, "wrk's -d ran out before the attempts were done")
	}
	r.wrk, _ = w.stop(b)
	r.logged = len(m.matching(func(l logLine) bool { return strings.HasSuffix(l.Msg, rejectedMsg) }))
	exits := childExits(m)
	r.childExits = len(exits)
	if len(exits) > 0 {
		watch.problems = append(watch.problems, fmt.Sprintf("%d children exited, the first: %+v", len(exits), exits[0]))
	}
	r.problems = watch.problems
	for _, p := range r.problems {
		b.Error(p)
	}
	m.stop()
	return r
}

func (r rejectedResult) report(b *testing.B, mode string, load upgradeLoad) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.wrk.failed()), "failed")
	b.ReportMetric(float64(r.rejected), "rejected")
	b.ReportMetric(float64(r.attempts), "attempts")
	b.ReportMetric(ms(quantileOf(r.cmd, 0.5)), "reject-cmd-ms/p50")
	b.ReportMetric(float64(r.wrk.Requests)/max(r.wrk.Seconds, 1e-9), "req/s")
	b.Logf("sockets=%s load=%s: %d of %d broken binaries rejected with exit 1 (exits 1, not executable, older state format, alternating; %d log lines ending %q) under `wrk %s`: %d requests in %.1f s (%.0f/s), socket errors connect %d read %d write %d timeout %d, non-2xx %d: failed %d (goal 0); master pid %d kept, children %v kept, %d child exits; `master upgrade` median %.0f ms, max %.0f ms; master before: %v, after: %v; problems: %d",
		mode, load.name, r.rejected, r.attempts, r.logged, rejectedMsg, strings.Join(load.args, " "),
		r.wrk.Requests, r.wrk.Seconds, float64(r.wrk.Requests)/max(r.wrk.Seconds, 1e-9),
		r.wrk.Connect, r.wrk.Read, r.wrk.Write, r.wrk.Timeout, r.wrk.Non2xx, r.wrk.failed(),
		r.pid, r.children, r.childExits, ms(quantileOf(r.cmd, 0.5)), ms(quantileOf(r.cmd, 1)),
		r.before, r.after, len(r.problems))
}
