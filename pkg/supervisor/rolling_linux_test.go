package supervisor

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rollingConfig is testConfig with the rolling strategy, surge slots at
// a time.
func rollingConfig(t *testing.T, workers, surge int) Config {
	cfg := testConfig(t, workers)
	cfg.ReloadStrategy, cfg.MaxSurge = StrategyRolling, surge
	return cfg
}

// liveCount is the number of children not yet exited.
func (h *harness) liveCount() int { return len(h.procs.live()) }

// reloadStatus is the running reload as Status shows it; the test fails
// when none runs.
func (h *harness) reloadStatus() ReloadStatus {
	h.t.Helper()
	st := h.status()
	if st.Reload == nil {
		h.t.Fatalf("no reload in the status")
	}
	return *st.Reload
}

// A rolling reload replaces one slot at a time: each new child ready
// before the old one of its slot drains, never more than N+1 children,
// the generation up once, at the end.
func TestRollingReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 3, 1))
	h.readyAll(1)
	old := []*fakeProc{h.child(0, 1), h.child(1, 1), h.child(2, 1)}
	res := h.reloadAsync()
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready", "2/1:ready")
	rs := h.reloadStatus()
	if rs.Strategy != StrategyRolling || rs.Phase != "rolling" || rs.Generation != 2 || rs.Slots != 3 || rs.SlotsDone != 0 {
		t.Errorf("reload status %+v", rs)
	}
	for i := range 3 {
		if len(h.procs.signalsOf(old[i].pid)) != 0 {
			t.Fatalf("slot %d's old child was signalled before its successor was ready", i)
		}
		h.ready(h.child(i, 2))
		if got := h.procs.signalsOf(old[i].pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
			t.Errorf("slot %d's old child got %v once its successor was ready, want SIGTERM", i, got)
		}
		if n := h.liveCount(); n > 4 {
			t.Errorf("%d children live, want at most N+1 = 4", n)
		}
		if i < 2 {
			if st := h.status(); st.Generation != 1 || st.Reload.SlotsDone != i+1 {
				t.Errorf("after slot %d: generation %d, slots done %d; want 1 and %d", i, st.Generation, st.Reload.SlotsDone, i+1)
			}
			var why string
			h.onLoop(func() { why = h.s.unreadySlots() })
			if why != "" {
				t.Errorf("/readyz would say %q while rolling: every slot has a ready child", why)
			}
			snap, _ := h.s.Snapshot()
			if !snap.ReloadInProgress {
				t.Error("prefork_reload_in_progress is 0 while rolling")
			}
			gens := map[int]bool{}
			for _, c := range snap.Children {
				gens[c.Generation] = true
			}
			if !gens[1] || !gens[2] {
				t.Errorf("prefork_child_info shows generations %v while rolling, want both", gens)
			}
		}
	}
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v, want generation 2", r)
	}
	h.wantStates("0/2:ready", "1/2:ready", "2/2:ready")
	snap, _ := h.s.Snapshot()
	if snap.Generation != 2 || snap.Reloads[reloadKey("success", StrategyRolling)] != 1 || snap.ReloadInProgress {
		t.Errorf("snapshot: generation %d, reloads %v, in progress %v", snap.Generation, snap.Reloads, snap.ReloadInProgress)
	}
	if st := h.status(); st.Reload != nil {
		t.Errorf("reload status %+v after the reload", st.Reload)
	}
}

// --max-surge 2 replaces two slots at once.
func TestRollingReloadSurge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 4, 2))
	h.readyAll(1)
	res := h.reloadAsync()
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready", "1/2:starting", "2/1:ready", "3/1:ready")
	h.ready(h.child(1, 2))
	h.wantStates("0/1:ready", "0/2:starting", "1/2:ready", "2/1:ready", "2/2:starting", "3/1:ready")
	h.ready(h.child(0, 2), h.child(2, 2))
	h.ready(h.child(3, 2))
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v", r)
	}
}

// A rolling reload picks its strategy per reload too.
func TestReloadStrategyPerReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Strategy: StrategyRolling})
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready")
	h.readyAll(2)
	h.readyAll(2)
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v", r)
	}
	// The next reload is the configuration's again: a whole generation.
	res = h.reloadAsync()
	h.wantStates("0/2:ready", "0/3:starting", "1/2:ready", "1/3:starting")
	h.readyAll(3)
	h.result(res)
	h.wantReloads("success", StrategyRolling, 1)
	h.wantReloads("success", StrategyGeneration, 1)
}

// A new child that fails sends the replaced slots back to the old
// configuration, each old child ready before the new one drains; the
// slots not reached yet are never touched.
func TestRollingReloadRollsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 3, 1))
	h.readyAll(1)
	untouched := []*fakeProc{h.child(1, 1), h.child(2, 1)}
	res := h.reloadAsync()
	replaced := h.child(0, 2)
	h.ready(replaced)
	h.exit(h.child(1, 2), exitCode(3))
	h.wantStates("0/1:starting", "0/2:ready", "1/1:ready", "2/1:ready")
	if rs := h.reloadStatus(); rs.Phase != "rolling_back" {
		t.Errorf("phase %q, want rolling_back", rs.Phase)
	}
	if got := h.procs.signalsOf(replaced.pid); len(got) != 0 {
		t.Errorf("the replaced slot's new child got %v before its old one was back", got)
	}
	h.ready(h.child(0, 1))
	if got := h.procs.signalsOf(replaced.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Errorf("the replaced slot's new child got %v, want SIGTERM once the old one was back", got)
	}
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || r.Generation != 1 || !strings.Contains(r.Err.Error(), "slot 1") ||
		!strings.Contains(r.Err.Error(), "exited with code 3") {
		t.Fatalf("reload = %+v, want rolled back naming slot 1 and its exit", r)
	}
	h.wantStates("0/1:ready", "1/1:ready", "2/1:ready")
	for _, p := range untouched {
		if got := h.procs.signalsOf(p.pid); len(got) != 0 {
			t.Errorf("untouched old child %d was signalled %v", p.pid, got)
		}
	}
	h.wantReloads("rolled_back", StrategyRolling, 1)
	// The slot that went back is an ordinary slot again: a crash restarts it.
	h.exit(h.child(0, 1), exitCode(1))
	h.clock.Advance(time.Minute)
	h.wantStates("0/1:starting", "1/1:ready", "2/1:ready")
}

// An old child that does not come back is tried again after a backoff;
// the new child serves its slot meanwhile.
func TestRollbackRetriesOldChild(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 2, 1))
	h.readyAll(1)
	res := h.reloadAsync()
	h.ready(h.child(0, 2))
	h.exit(h.child(1, 2), exitCode(1))
	h.exit(h.child(0, 1), exitCode(1)) // the old configuration's child, starting again
	h.wantStates("0/2:ready", "1/1:ready")
	var why string
	h.onLoop(func() { why = h.s.unreadySlots() })
	if why != "" {
		t.Errorf("/readyz would say %q while slot 0's new child serves it", why)
	}
	h.clock.Advance(minRecycleRetry)
	h.wantStates("0/1:starting", "0/2:ready", "1/1:ready")
	h.ready(h.child(0, 1))
	if r := h.result(res); !errors.Is(r.Err, ErrRolledBack) {
		t.Fatalf("reload = %+v", r)
	}
	h.wantStates("0/1:ready", "1/1:ready")
}

// Canaries are replaced first and watched; only then do the others go.
func TestCanaryWatchedThenRest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 3, 1))
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1, CanaryFor: 5 * time.Second})
	h.ready(h.child(0, 2))
	h.wantStates("0/2:ready", "1/1:ready", "2/1:ready")
	rs := h.reloadStatus()
	if rs.Phase != "canary" || rs.Canary != 1 || rs.CanaryLeftSeconds != 5 {
		t.Errorf("reload status %+v, want canary with 5 s left", rs)
	}
	h.clock.Advance(4 * time.Second)
	if rs := h.reloadStatus(); rs.Phase != "canary" || rs.CanaryLeftSeconds != 1 {
		t.Errorf("reload status %+v, want canary with 1 s left", rs)
	}
	h.clock.Advance(time.Second)
	h.wantStates("0/2:ready", "1/1:ready", "1/2:starting", "2/1:ready")
	h.ready(h.child(1, 2))
	h.ready(h.child(2, 2))
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v", r)
	}
}

// A canary that crashes during its watch is rolled back; with the
// generation strategy, the other slots were never touched.
func TestCanaryCrashRollsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 3))
	h.readyAll(1)
	others := []*fakeProc{h.child(1, 1), h.child(2, 1)}
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1, CanaryFor: 5 * time.Second})
	h.ready(h.child(0, 2))
	h.clock.Advance(2 * time.Second)
	h.exit(h.child(0, 2), exitCode(1))
	h.wantStates("0/1:starting", "1/1:ready", "2/1:ready")
	h.ready(h.child(0, 1))
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "slot 0") ||
		!strings.Contains(r.Err.Error(), "a canary, 2s into its 5s watch: exited with code 1") {
		t.Fatalf("reload = %+v, want rolled back naming slot 0, in its watch", r)
	}
	h.clock.Advance(10 * time.Second) // the watch's timer, had it stayed, fires now
	h.wantStates("0/1:ready", "1/1:ready", "2/1:ready")
	for _, p := range others {
		if got := h.procs.signalsOf(p.pid); len(got) != 0 {
			t.Errorf("old child %d was signalled %v", p.pid, got)
		}
	}
	if n := len(h.procs.started()); n != 5 {
		t.Errorf("%d children started, want 5 (3, the canary, its slot's old child again)", n)
	}
	h.wantReloads("rolled_back", StrategyGeneration, 1)
}

// With the generation strategy, the slots after the canaries start
// together, and their old children drain once all are ready.
func TestCanaryThenGeneration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 3))
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1, CanaryFor: time.Second})
	h.ready(h.child(0, 2))
	h.clock.Advance(time.Second)
	h.wantStates("0/2:ready", "1/1:ready", "1/2:starting", "2/1:ready", "2/2:starting")
	h.ready(h.child(1, 2))
	h.wantStates("0/2:ready", "1/1:ready", "1/2:ready", "2/1:ready", "2/2:starting")
	h.ready(h.child(2, 2))
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v", r)
	}
	h.wantStates("0/2:ready", "1/2:ready", "2/2:ready")
}

// A canary that misses its watchdog fails the watch at once, before its
// exit.
func TestCanaryMissedWatchdog(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 1)
	cfg.Watchdog = time.Second
	h := newHarness(t, cfg)
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1, CanaryFor: time.Minute})
	canary := h.child(0, 2)
	h.procs.mu.Lock()
	canary.ignore[unix.SIGQUIT] = true
	h.procs.mu.Unlock()
	h.notify(canary, notification{Ready: true, Watchdog: true})
	h.clock.Advance(time.Second)
	h.wantStates("0/1:starting", "0/2:ready", "1/1:ready")
	h.ready(h.child(0, 1))
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "missed its watchdog") {
		t.Fatalf("reload = %+v, want rolled back for the watchdog", r)
	}
}

// A reload that would leave more than --max-draining-generations
// draining first kills the oldest draining generation.
func TestMaxDrainingGenerations(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	lingering := func(g int) *fakeProc {
		p := h.child(0, g)
		h.procs.mu.Lock()
		p.ignore[unix.SIGTERM] = true
		h.procs.mu.Unlock()
		return p
	}
	reload := func(g int) {
		res := h.reloadAsync()
		h.readyAll(g)
		if r := h.result(res); r.Err != nil {
			t.Fatalf("reload %d: %v", g, r.Err)
		}
	}
	h.readyAll(1)
	first := lingering(1)
	reload(2)
	second := lingering(2)
	reload(3) // generations 1 and 2 drain: the default allows two
	third := lingering(3)
	if got := h.procs.signalsOf(first.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Fatalf("generation 1 got %v, want only SIGTERM", got)
	}
	reload(4) // 1, 2 and 3 would drain: 1 is killed first
	if got := h.procs.signalsOf(first.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM, unix.SIGKILL}) {
		t.Errorf("generation 1 got %v, want SIGTERM then SIGKILL", got)
	}
	if got := h.procs.signalsOf(second.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Errorf("generation 2 got %v, want only SIGTERM", got)
	}
	if n := h.logs.count("killing the oldest draining generation: the reload would leave more generations draining than --max-draining-generations"); n != 1 {
		t.Errorf("said %d times", n)
	}
	snap, _ := h.s.Snapshot()
	if snap.DrainKilled != 1 {
		t.Errorf("prefork_drain_killed_total = %d, want 1", snap.DrainKilled)
	}
	// A reload rolled back leaves no more generations draining than
	// before (only its own new children, barely started): it kills none.
	res := h.reloadAsync()
	h.exit(h.child(0, 5), exitCode(1))
	if r := h.result(res); !errors.Is(r.Err, ErrRolledBack) {
		t.Fatalf("reload = %+v", r)
	}
	for _, p := range []*fakeProc{second, third} {
		if got := h.procs.signalsOf(p.pid); slices.Contains(got, unix.SIGKILL) {
			t.Errorf("generation %d was killed by a reload that rolled back", p.generation())
		}
	}
}

// A rolling reload applies the cap when the serving generation begins to
// drain: at its first slot replaced.
func TestMaxDrainingRolling(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 1)
	cfg.MaxDrainingGenerations = 1
	h := newHarness(t, cfg)
	h.readyAll(1)
	linger := func(g int) []*fakeProc {
		ps := []*fakeProc{h.child(0, g), h.child(1, g)}
		h.procs.mu.Lock()
		for _, p := range ps {
			p.ignore[unix.SIGTERM] = true
		}
		h.procs.mu.Unlock()
		return ps
	}
	first := linger(1)
	res := h.reloadAsync()
	h.ready(h.child(0, 2))
	h.ready(h.child(1, 2))
	h.result(res)
	linger(2)
	res = h.reloadAsync()
	for _, p := range first {
		if got := h.procs.signalsOf(p.pid); slices.Contains(got, unix.SIGKILL) {
			t.Fatalf("generation 1 killed before any child of generation 2 drained")
		}
	}
	h.ready(h.child(0, 3))
	for _, p := range first {
		if got := h.procs.signalsOf(p.pid); !slices.Contains(got, unix.SIGKILL) {
			t.Errorf("generation 1's pid %d got %v once generation 2 began to drain, want SIGKILL", p.pid, got)
		}
	}
	h.ready(h.child(1, 3))
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload = %+v", r)
	}
}

// A stop during a rollout answers its caller and stops everyone.
func TestStopDuringRollout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 2, 1))
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1, CanaryFor: time.Minute})
	h.ready(h.child(0, 2))
	h.s.Stop(StopGraceful)
	if r := h.result(res); !errors.Is(r.Err, ErrStopping) {
		t.Fatalf("reload = %+v, want stopping", r)
	}
	if err := h.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// canary=0 turns a configured canary off for one reload.
func TestNoCanaryPerReload(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 2)
	cfg.Canary, cfg.CanaryFor = 1, time.Minute
	h := newHarness(t, cfg)
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{NoCanary: true})
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready", "1/2:starting")
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload = %+v", r)
	}
}

// An old configuration that no longer starts does not hold the rollback
// forever: after maxRestoreTries the slot keeps its new child, the reload
// ends rolled back saying so, and the next reload can run.
func TestRollbackGivesUpOnOldChild(t *testing.T) {
	t.Parallel()
	h := newHarness(t, rollingConfig(t, 2, 1))
	h.readyAll(1)
	res := h.reloadAsync()
	kept := h.child(0, 2)
	h.ready(kept)
	h.exit(h.child(1, 2), exitCode(1))
	for n := range maxRestoreTries - 1 {
		h.exit(h.child(0, 1), exitCode(1))
		h.clock.Advance(max(minRecycleRetry, restartDelay(n+1))) // the next try, before its ready timeout
	}
	h.exit(h.child(0, 1), exitCode(1))
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "slot 1") ||
		!strings.Contains(r.Err.Error(), "keeps its new child") {
		t.Fatalf("reload = %+v, want rolled back naming slot 1 and the slot kept", r)
	}
	h.wantStates("0/1:ready", "1/1:ready") // the kept child now counts in the serving generation
	if got := h.procs.signalsOf(kept.pid); len(got) != 0 {
		t.Errorf("the kept child got %v", got)
	}
	// Its crash restarts the slot with the serving configuration.
	h.exit(kept, exitCode(1))
	h.clock.Advance(time.Minute)
	if p := h.newest(0); p.generation() != 1 {
		t.Errorf("slot 0 restarted with generation %d, want 1", p.generation())
	}
	// And the next reload runs.
	res = h.reloadAsync()
	h.readyAll(2)
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("the next reload: %v", r.Err)
	}
}

// A recycle's successor that drains with its slot's old child is no
// longer the slot's heir: after a rollback, a crash of the slot's child
// restarts the slot.
func TestRolloutDrainsRecycleSuccessor(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 1)
	cfg.MaxAccepts = 10
	h := newHarness(t, cfg)
	h.readyAll(1)
	inc(t, h.child(0, 1), 12)
	h.clock.Advance(recycleInterval)
	succ := h.newest(0)
	h.procs.mu.Lock()
	succ.ignore[unix.SIGTERM] = true // a long drain
	h.procs.mu.Unlock()
	res := h.reloadAsync()
	h.ready(h.child(0, 2))
	h.exit(h.child(1, 2), exitCode(1))
	restored := h.newest(0)
	h.ready(restored)
	if r := h.result(res); !errors.Is(r.Err, ErrRolledBack) {
		t.Fatalf("reload = %+v", r)
	}
	h.exit(restored, exitCode(1))
	h.clock.Advance(time.Second)
	if p := h.newest(0); p == succ || p == restored {
		t.Errorf("slot 0 was not restarted after its child crashed (states %v)", h.states())
	}
}

// A reload that moves the address or switches the socket mode cannot go
// slot by slot: it starts a whole generation, and says so.
func TestRollingFallsBackOnAddressChange(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 1)
	next := cfg
	next.Listen = testConfig(t, 1).Listen
	h := newHarness(t, cfg, loading(func() (Config, error) { return next, nil }))
	h.readyAll(1)
	res := h.reloadAsyncWith(ReloadOptions{Canary: 1})
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready", "1/2:starting")
	if n := h.logs.count("this reload starts a whole generation, without canaries: it cannot go slot by slot when the addresses change (" +
		cfg.Listen.String() + " to " + next.Listen.String() + ")"); n != 1 {
		t.Errorf("warned %d times", n)
	}
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload = %+v", r)
	}
	h.wantReloads("success", StrategyGeneration, 1)
}

// A rolling reload that adds slots starts those first: they replace
// nothing, and in master socket mode their sockets take connections
// from the start.
func TestRollingNewSlotsFirst(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 1, 1)
	cfg.Sockets = SocketsMaster
	next := cfg
	next.Workers = 2
	h := newHarness(t, cfg, loading(func() (Config, error) { return next, nil }))
	h.readyAll(1)
	res := h.reloadAsync()
	h.wantStates("0/1:ready", "1/2:starting")
	h.ready(h.child(1, 2))
	h.wantStates("0/1:ready", "0/2:starting", "1/2:ready")
	h.ready(h.child(0, 2))
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload = %+v", r)
	}
}

// A one-slot rolling reload applies the cap at its first drain and again
// at its commit, in the same turn of the loop: the generation killed the
// first time is still in the table (not reaped yet), and is neither
// killed nor counted again.
func TestMaxDrainingCountsOnce(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 1, 1)
	cfg.MaxDrainingGenerations = 1
	h := newHarness(t, cfg)
	h.readyAll(1)
	first := h.child(0, 1)
	h.procs.mu.Lock()
	first.ignore[unix.SIGTERM] = true
	h.procs.mu.Unlock()
	res := h.reloadAsync()
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	res = h.reloadAsync()
	h.readyAll(3)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	snap, _ := h.s.Snapshot()
	if got := h.procs.signalsOf(first.pid); snap.DrainKilled != 1 || slices.Index(got, unix.SIGKILL) != len(got)-1 {
		t.Errorf("drain_killed = %d, signals of generation 1 = %v; want 1 and one SIGKILL", snap.DrainKilled, got)
	}
	if n := h.logs.count("killing the oldest draining generation"); n != 1 {
		t.Errorf("logged the kill %d times", n)
	}
}

// A rollback that gives up on a slot whose new child is gone restarts the
// slot under the backoff, though the slot's old child, drained when it
// was replaced, still lingers.
func TestGiveUpRestartsEmptySlot(t *testing.T) {
	t.Parallel()
	cfg := rollingConfig(t, 2, 1)
	cfg.DrainTimeout = time.Minute
	h := newHarness(t, cfg)
	h.readyAll(1)
	old0 := h.child(0, 1)
	h.procs.mu.Lock()
	old0.ignore[unix.SIGTERM] = true // a long drain
	h.procs.mu.Unlock()
	res := h.reloadAsync()
	h.ready(h.child(0, 2))
	// The old configuration no longer starts (its binary gone): the
	// start fails at once, as exec's ENOENT does in child socket mode.
	h.procs.mu.Lock()
	h.procs.failStart = func(spec spawnSpec) error {
		if slices.Contains(spec.env, "PREFORK_GENERATION=1") {
			return errors.New("exec: no such file")
		}
		return nil
	}
	h.procs.mu.Unlock()
	h.exit(h.child(0, 2), exitCode(1))
	for range maxRestoreTries {
		h.clock.Advance(minRecycleRetry)
	}
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "restarts under the backoff") {
		t.Fatalf("reload = %+v", r)
	}
	h.procs.mu.Lock()
	h.procs.failStart = nil // the binary is back
	h.procs.mu.Unlock()
	h.clock.Advance(10 * time.Second)
	t.Logf("after the backoff: %v", h.states())
	h.clock.Advance(time.Minute) // the old child's drain timeout: SIGKILL
	h.settle()
	t.Logf("after the drain timeout: %v", h.states())
	found := false
	for _, st := range h.states() {
		if strings.HasPrefix(st, "0/") && !strings.HasSuffix(st, ":draining") {
			found = true
		}
	}
	if !found {
		t.Errorf("slot 0 has no child: %v", h.states())
	}
}
