package freeze

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/pkg/cgroup"
)

// start starts cmd, and kills and reaps it when the test ends (SIGKILL
// ends a stopped or frozen process too).
func start(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// busyCmd is the test binary as a busy Go child (runChild).
func busyCmd() *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=busy")
	return cmd
}

// startBusy starts a busy Go child and waits until it spins.
func startBusy(t testing.TB) int {
	t.Helper()
	pid := start(t, busyCmd()).Process.Pid
	waitFor(t, "two threads of the child to run", func() bool {
		n := 0
		for _, s := range states(t, pid) {
			if s == 'R' {
				n++
			}
		}
		return n >= 2
	})
	return pid
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// states reads pid's thread states, failing the test if it is gone.
func states(t testing.TB, pid int) map[int]byte {
	t.Helper()
	s, err := threadStates(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return s
}

// show formats pid's thread states for a message, as "tid:state ...".
func show(t testing.TB, pid int) string {
	t.Helper()
	var parts []string
	for tid, s := range states(t, pid) {
		parts = append(parts, fmt.Sprintf("%d:%c", tid, s))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// anyThread reports whether a thread of pid is in state s.
func anyThread(t testing.TB, pid int, s byte) bool {
	t.Helper()
	for _, st := range states(t, pid) {
		if st == s {
			return true
		}
	}
	return false
}

// allStopped reports whether every thread of pid is in state T.
func allStopped(t testing.TB, pid int) bool {
	t.Helper()
	for _, st := range states(t, pid) {
		if st != stateStopped {
			return false
		}
	}
	return true
}

// stoppedBefore starts `sleep` and stops it with SIGSTOP, as an operator
// would, before the test's Freeze.
func stoppedBefore(t *testing.T) int {
	t.Helper()
	pid := start(t, exec.Command("sleep", "1000")).Process.Pid
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sleep to stop", func() bool { return allStopped(t, pid) })
	return pid
}

// freeze calls Freeze with a 5 s deadline, and Thaws when the test ends.
func freeze(t *testing.T, targets ...Target) (*Frozen, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := Freeze(ctx, targets)
	if f == nil {
		t.Fatal("Freeze returned a nil *Frozen")
	}
	t.Cleanup(func() { f.Thaw() })
	return f, err
}

func TestFreezeStopsAndThawResumes(t *testing.T) {
	pid := startBusy(t)
	f, err := freeze(t, Target{Pids: []int{pid}})
	if err != nil || !f.Complete() {
		t.Fatalf("Freeze: %v, complete %v", err, f.Complete())
	}
	if !allStopped(t, pid) {
		t.Fatalf("after Freeze, thread states %s; want all T", show(t, pid))
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	// SIGCONT wakes the threads within the kill call itself.
	if anyThread(t, pid, stateStopped) {
		t.Fatalf("after Thaw, thread states %s; want none T", show(t, pid))
	}
	waitFor(t, "the child to run again", func() bool { return anyThread(t, pid, 'R') })
}

func TestFreezeLeavesStoppedOnesStopped(t *testing.T) {
	before := stoppedBefore(t)
	busy := startBusy(t)
	f, err := freeze(t, Target{Pids: []int{before}}, Target{Pids: []int{busy}})
	if err != nil || !f.Complete() {
		t.Fatalf("Freeze: %v, complete %v", err, f.Complete())
	}
	if !allStopped(t, busy) {
		t.Fatalf("busy child not stopped: %s", show(t, busy))
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if !allStopped(t, before) {
		t.Errorf("Thaw resumed a process stopped before Freeze: %s", show(t, before))
	}
	if anyThread(t, busy, stateStopped) {
		t.Errorf("Thaw left the busy child stopped: %s", show(t, busy))
	}
}

func TestThawTwiceSendsNothing(t *testing.T) {
	pid := startBusy(t)
	f, err := freeze(t, Target{Pids: []int{pid}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	// Someone else stops it now: a second Thaw must not resume it.
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child to stop", func() bool { return allStopped(t, pid) })
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if !allStopped(t, pid) {
		t.Errorf("a second Thaw resumed the child: %s", show(t, pid))
	}
}

func TestFreezeCanceled(t *testing.T) {
	pid := startBusy(t)
	targets := []Target{{Pids: []int{pid}}}
	var g *cgroup.Group
	if p, err := cgroup.Own(); err == nil {
		g = newGroup(t, p)
		startIn(t, g, busyCmd())
		targets = append(targets, Target{Cgroup: g})
	} else {
		t.Logf("cgroup path not tested: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f, err := Freeze(ctx, targets)
	t.Cleanup(func() { f.Thaw() })
	if !errors.Is(err, context.Canceled) || f.Complete() {
		t.Fatalf("Freeze = %v, complete %v; want context.Canceled, false", err, f.Complete())
	}
	t.Logf("error: %v", err)
	// The stop was asked for all the same.
	waitFor(t, "the child to stop", func() bool { return allStopped(t, pid) })
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if anyThread(t, pid, stateStopped) {
		t.Errorf("after Thaw, thread states %s; want none T", show(t, pid))
	}
	if g != nil && readFlag(t, g, "cgroup.freeze") != "0" {
		t.Error("group still asked to freeze after Thaw")
	}
}

func TestFreezeSkipsGone(t *testing.T) {
	// Reaped: no /proc entry. A zombie: exited, not reaped.
	reaped := exec.Command("true")
	if err := reaped.Run(); err != nil {
		t.Fatal(err)
	}
	zombie := start(t, exec.Command("true")).Process.Pid
	waitFor(t, "a zombie", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(zombie) + "/stat")
		s, perr := parseState(b)
		return err == nil && perr == nil && s == stateZombie
	})
	targets := []Target{{Pids: []int{reaped.Process.Pid, zombie}}}
	if p, err := cgroup.Own(); err == nil {
		targets = append(targets, Target{Cgroup: &cgroup.Group{Dir: filepath.Join(p.Dir, "prefork-test-gone")}})
	}
	f, err := freeze(t, targets...)
	if err != nil || !f.Complete() {
		t.Fatalf("Freeze: %v, complete %v; want nil, true", err, f.Complete())
	}
	if len(f.stopped) != 0 {
		t.Errorf("signaled %v", f.stopped)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
}

func TestFreezeCgroupTree(t *testing.T) {
	p, err := cgroup.Own()
	if err != nil {
		t.Skipf("needs child cgroups (run as root on cgroup v2): %v", err)
	}
	g := newGroup(t, p)
	// A shell and its busy child, which the freeze must reach too.
	startIn(t, g, exec.Command("sh", "-c", "sh -c 'while :; do :; done' & wait"))
	waitFor(t, "two processes in the group", func() bool {
		pids, err := g.Procs()
		return err == nil && len(pids) == 2
	})
	f, err := freeze(t, Target{Cgroup: g})
	if err != nil || !f.Complete() {
		t.Fatalf("Freeze: %v, complete %v", err, f.Complete())
	}
	if ev := readFlag(t, g, "cgroup.events"); !strings.Contains(ev, "frozen 1") {
		t.Fatalf("after Freeze, cgroup.events %q; want frozen 1", ev)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "frozen 0", func() bool { return strings.Contains(readFlag(t, g, "cgroup.events"), "frozen 0") })
}

func TestFreezeCgroupFrozenBefore(t *testing.T) {
	p, err := cgroup.Own()
	if err != nil {
		t.Skipf("needs child cgroups (run as root on cgroup v2): %v", err)
	}
	g := newGroup(t, p)
	startIn(t, g, busyCmd())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := g.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Thaw() })
	f, err := freeze(t, Target{Cgroup: g})
	if err != nil || !f.Complete() {
		t.Fatalf("Freeze: %v, complete %v", err, f.Complete())
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if readFlag(t, g, "cgroup.freeze") != "1" {
		t.Error("Thaw thawed a group frozen before Freeze")
	}
}

// groups numbers the test groups, unique across the runs of -count.
var groups atomic.Uint64

// newGroup makes a group that is killed and removed when the test ends.
func newGroup(t testing.TB, p *cgroup.Parent) *cgroup.Group {
	t.Helper()
	g, err := p.New(fmt.Sprintf("prefork-freeze-test-%d-%d", os.Getpid(), groups.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Thaw()
		if err := g.Remove(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return g
}

// startIn starts cmd forked straight into g.
func startIn(t testing.TB, g *cgroup.Group, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	fd, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return start(t, cmd)
}

// readFlag reads one of g's interface files, trimmed.
func readFlag(t testing.TB, g *cgroup.Group, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.Dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
