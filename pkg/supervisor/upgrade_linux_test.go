package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeUpgrader stands in for the check and the exec of a new master
// binary. Its exec does in-process what the kernel's does: the old loop
// ends where it stands (its goroutine exits, nothing of it answers any
// more), and the state goes to the test, with copies of the descriptors
// it names, owned by the new master.
type fakeUpgrader struct {
	mu       sync.Mutex
	s        *Supervisor // the master that execs
	checkErr error
	execErr  error
	version  string
	checked  int
	states   chan *upgradeState
	gate     chan struct{} // when set, the check waits for it to close
}

func newFakeUpgrader() *fakeUpgrader {
	return &fakeUpgrader{version: "v-new", states: make(chan *upgradeState, 1)}
}

func (u *fakeUpgrader) open(string) (newBinary, error) { return u, nil }
func (u *fakeUpgrader) close()                         {}

func (u *fakeUpgrader) check(_ context.Context, state []byte) (string, error) {
	u.mu.Lock()
	gate := u.gate
	u.checked++
	u.mu.Unlock()
	if gate != nil {
		<-gate
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, err := decodeState(state); err != nil {
		return "", err
	}
	return u.version, u.checkErr
}

func (u *fakeUpgrader) exec(state []byte, keep []int) error {
	u.mu.Lock()
	err, s := u.execErr, u.s
	u.mu.Unlock()
	if err != nil {
		return err
	}
	st, err := decodeState(state)
	if err != nil {
		return err
	}
	dup := func(fd int) int {
		if fd < 0 {
			return fd
		}
		if !slices.Contains(keep, fd) {
			panic("the exec would close a descriptor the state names")
		}
		n, err := unix.Dup(fd)
		if err != nil {
			panic(err)
		}
		return n
	}
	st.Control, st.Metrics, st.Notify, st.Guard = dup(st.Control), dup(st.Metrics), dup(st.Notify), dup(st.Guard)
	for i := range st.Sockets {
		st.Sockets[i].FD = dup(st.Sockets[i].FD)
	}
	for i := range st.Children {
		st.Children[i].Page = dup(st.Children[i].Page)
	}
	u.states <- st
	// Nothing of the old master runs on: its timers, and the goroutines
	// watching its children, end with it (on its loop, which owns them).
	for _, c := range s.children {
		c.stopTimers()
	}
	for _, sl := range s.cur.slots {
		sl.cancelRestart()
	}
	close(s.quit) // whatever still sends to the old loop is dropped
	runtime.Goexit()
	return nil
}

// upgrading gives the harness's master a fake upgrader.
func upgrading(u *fakeUpgrader) harnessOption {
	return func(e *env, _ *Options) { e.upgrade = u }
}

// upgrade upgrades h's master in place through u and returns the harness
// of the new one, on the same processes and clock.
func (h *harness) upgrade(u *fakeUpgrader) *harness {
	h.t.Helper()
	return h.upgradeWith(u, func() {})
}

// upgradeWith is upgrade, with during run between the old master's exec
// and the new one's start: what happens while the kernel loads it.
func (h *harness) upgradeWith(u *fakeUpgrader, during func()) *harness {
	h.t.Helper()
	u.mu.Lock()
	u.s = h.s
	u.mu.Unlock()
	res := h.s.Upgrade(context.Background(), "")
	if res.Err != nil {
		h.t.Fatalf("Upgrade: %v", res.Err)
	}
	res.Answered()
	var st *upgradeState
	select {
	case st = <-u.states:
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no exec within 10 s")
	}
	h.execd.Store(true)
	during()
	return h.resume(st, u)
}

// resume starts the new master's harness from st.
func (h *harness) resume(st *upgradeState, u *fakeUpgrader) *harness {
	h.t.Helper()
	n := &harness{t: h.t, clock: h.clock, procs: h.procs, observe: h.observe, logs: h.logs, systemd: h.systemd,
		done: make(chan error, 1)}
	e := h.s.env
	e.upgrade = u
	s, err := resumeSupervisor(st, Options{Log: slog.New(h.logs)}, e)
	if err != nil {
		h.t.Fatalf("resumeSupervisor: %v", err)
	}
	n.s = s
	h.clock.settle = n.settle
	go func() { n.done <- s.Run(context.Background()) }()
	h.t.Cleanup(func() {
		s.Stop(StopFast)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			h.t.Errorf("the upgraded master's Run did not return after a fast stop")
		}
	})
	n.settle()
	return n
}

func TestUpgradeKeepsChildrenCountsAndBackoff(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	h := newHarness(t, testConfig(t, 3), upgrading(u))
	h.readyAll(1)
	// Slot 2 fails twice before READY: its backoff must survive.
	h.exit(h.child(2, 1), exitCode(1))
	h.exit(h.child(2, 1), exitCode(1))
	for _, p := range h.procs.live() {
		for range 5 + p.slot() {
			p.counter.Inc()
		}
	}
	before := h.status()
	snapBefore, _ := h.s.Snapshot()

	n := h.upgrade(u)
	after := n.status()
	if after.PID != before.PID || after.Generation != 1 || after.Upgrades != 1 {
		t.Errorf("after: pid %d generation %d upgrades %d, want pid %d generation 1 upgrades 1",
			after.PID, after.Generation, after.Upgrades, before.PID)
	}
	row := func(st Status) []string {
		var out []string
		for _, c := range st.Children {
			out = append(out, fmtRow(c))
		}
		return out
	}
	if !slices.Equal(row(before), row(after)) {
		t.Errorf("children before %v\nafter %v", row(before), row(after))
	}
	snapAfter, _ := n.s.Snapshot()
	for i := range snapBefore.Slots {
		if a, b := snapAfter.Slots[i].Listeners[0].Count, snapBefore.Slots[i].Listeners[0].Count; a != b {
			t.Errorf("slot %d accepts %d after, %d before", i, a, b)
		}
		if a, b := snapAfter.Slots[i].Restarts, snapBefore.Slots[i].Restarts; a != b {
			t.Errorf("slot %d restarts %d after, %d before", i, a, b)
		}
	}
	// The backoff goes on: slot 2's third start waits for its delay,
	// neither sooner nor never.
	if got := len(h.procs.started()); got != 4 {
		t.Fatalf("%d processes started by the upgrade, want 4 (3, and the restart of slot 2)", got)
	}
	h.clock.Advance(BackoffInitial)
	if got := len(h.procs.started()); got != 5 {
		t.Errorf("%d processes started after the backoff, want 5: the pending restart of slot 2 was lost", got)
	}
}

// fmtRow is a child's row as an upgrade must keep it.
func fmtRow(c ChildStatus) string {
	return fmt.Sprintf("%d/%d pid %d %s accepts %d restarts %d", c.Slot, c.Generation, c.PID, c.State, c.Accepts, c.Restarts)
}

func TestUpgradeRejectedRunsOn(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	u.checkErr = errors.New("exit status 1: flag provided but not defined: -new-flag")
	h := newHarness(t, testConfig(t, 2), upgrading(u))
	h.readyAll(1)
	before := h.status()
	res := h.s.Upgrade(context.Background(), "/usr/local/bin/master.new")
	if !errors.Is(res.Err, ErrUpgradeRejected) || !strings.Contains(res.Err.Error(), "new-flag") {
		t.Fatalf("Upgrade = %v, want ErrUpgradeRejected with the check's reason", res.Err)
	}
	h.settle()
	if after := h.status(); after.Upgrades != 0 || len(after.Children) != len(before.Children) {
		t.Errorf("after a rejected upgrade: %+v, want %+v", after, before)
	}
	h.wantStates("0/1:ready", "1/1:ready")
	// It runs on as before: a reload works.
	r := h.reloadAsync()
	h.readyAll(2)
	if res := h.result(r); res.Err != nil {
		t.Errorf("reload after a rejected upgrade: %v", res.Err)
	}
	var rejected uint64
	h.onLoop(func() { rejected = h.s.tally.upgrades["rejected"] })
	if rejected != 1 {
		t.Errorf("rejected upgrades %d, want 1", rejected)
	}
}

func TestUpgradeExecFailedRunsOn(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	u.execErr = unix.ENOEXEC
	h := newHarness(t, testConfig(t, 2), upgrading(u))
	h.readyAll(1)
	u.s = h.s
	res := h.s.Upgrade(context.Background(), "")
	if res.Err != nil {
		t.Fatalf("Upgrade: %v, want the check passed", res.Err)
	}
	res.Answered()
	h.waitFor("the failed exec in master status", func() bool { return h.status().UpgradeError != "" })
	st := h.status()
	if !strings.Contains(st.UpgradeError, "exec format error") || st.Upgrades != 0 {
		t.Errorf("status after a failed exec: upgrades %d, error %q", st.Upgrades, st.UpgradeError)
	}
	h.wantStates("0/1:ready", "1/1:ready")
	// The failure ended the upgrade: the next one runs.
	u.mu.Lock()
	u.execErr = nil
	u.mu.Unlock()
	n := h.upgrade(u)
	n.wantStates("0/1:ready", "1/1:ready")
}

func TestUpgradeAndReloadExcludeEachOther(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	h := newHarness(t, testConfig(t, 1), upgrading(u))
	h.readyAll(1)
	reload := h.reloadAsync() // generation 2 starts; it waits for READY
	res := h.s.Upgrade(context.Background(), "")
	if !errors.Is(res.Err, ErrUpgradeRejected) || !strings.Contains(res.Err.Error(), "reload") {
		t.Errorf("Upgrade during a reload = %v, want rejected: a reload is under way", res.Err)
	}
	h.readyAll(2)
	if r := h.result(reload); r.Err != nil {
		t.Fatalf("reload: %v", r.Err)
	}
	// Once it has ended, the upgrade runs.
	n := h.upgrade(u)
	n.wantStates("0/2:ready")
}

func TestUpgradeKeepsTimersOfStartingAndDrainingChildren(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	cfg := testConfig(t, 2)
	h := newHarness(t, cfg, upgrading(u))
	h.ready(h.child(0, 1)) // slot 1 still starting
	starting := h.child(1, 1)
	h.clock.Advance(cfg.ReadyTimeout / 2)
	n := h.upgrade(u)
	// Slot 1's ready timeout runs from its start, not from the upgrade.
	n.clock.Advance(cfg.ReadyTimeout/2 - time.Millisecond)
	if sigs := n.procs.signalsOf(starting.pid); len(sigs) != 0 {
		t.Errorf("slot 1 got %v before its ready timeout", sigs)
	}
	n.clock.Advance(2 * time.Millisecond)
	if sigs := n.procs.signalsOf(starting.pid); !slices.Contains(sigs, unix.SIGKILL) {
		t.Errorf("slot 1 got %v by its ready timeout, want SIGKILL", sigs)
	}
}

func TestUpgradeKeepsTheDrainTimeout(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg, upgrading(u))
	h.readyAll(1)
	old := h.child(0, 1)
	old.ignore = map[unix.Signal]bool{unix.SIGTERM: true}
	r := h.reloadAsync()
	h.readyAll(2)
	if res := h.result(r); res.Err != nil {
		t.Fatalf("reload: %v", res.Err)
	}
	h.clock.Advance(cfg.DrainTimeout / 2)
	n := h.upgrade(u)
	n.wantStates("0/1:draining", "0/2:ready")
	n.clock.Advance(cfg.DrainTimeout/2 - time.Millisecond)
	if sigs := n.procs.signalsOf(old.pid); slices.Contains(sigs, unix.SIGKILL) {
		t.Errorf("the draining child got %v before its drain timeout", sigs)
	}
	n.clock.Advance(2 * time.Millisecond)
	if sigs := n.procs.signalsOf(old.pid); !slices.Contains(sigs, unix.SIGKILL) {
		t.Errorf("the draining child got %v by its drain timeout, want SIGKILL", sigs)
	}
	n.wantStates("0/2:ready")
}

func TestUpgradeHandlesExitsDuringTheExec(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	h := newHarness(t, testConfig(t, 2), upgrading(u))
	h.readyAll(1)
	gone := h.child(1, 1)
	n := h.upgradeWith(u, func() { h.procs.end(gone.pid, killedBy(unix.SIGSEGV)) })
	// Reaped by the new master and restarted; slot 0 untouched.
	var got []int
	for _, p := range n.procs.live() {
		got = append(got, p.slot())
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{0, 1}) || n.procs.find(gone.pid) == nil {
		t.Fatalf("live slots %v, want [0 1]", got)
	}
	if st := n.status(); st.Children[1].PID == gone.pid || st.Children[1].Restarts != 1 {
		t.Errorf("slot 1 after its child crashed during the exec: %+v", st.Children[1])
	}
	// And a reload after the upgrade works as before.
	r := n.reloadAsync()
	n.readyAll(2)
	if res := n.result(r); res.Err != nil || res.Generation != 2 {
		t.Errorf("reload after the upgrade: %+v", res)
	}
}

// A stop asked for while the new binary is checked wins: no exec, and the
// master stops.
func TestUpgradeLosesToAStop(t *testing.T) {
	t.Parallel()
	u := newFakeUpgrader()
	u.gate = make(chan struct{})
	h := newHarness(t, testConfig(t, 1), upgrading(u))
	h.readyAll(1)
	res := make(chan UpgradeResult, 1)
	go func() { res <- h.s.Upgrade(context.Background(), "") }()
	h.waitFor("the check", func() bool { u.mu.Lock(); defer u.mu.Unlock(); return u.checked == 1 })
	h.s.Stop(StopGraceful)
	close(u.gate)
	r := <-res
	if !errors.Is(r.Err, ErrStopping) && !errors.Is(r.Err, ErrNotRunning) {
		t.Errorf("Upgrade with a stop during its check = %v, want ErrStopping or ErrNotRunning", r.Err)
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v, want a clean stop", err)
	}
	if len(u.states) != 0 {
		t.Errorf("the master exec'd after a stop was asked for")
	}
}
