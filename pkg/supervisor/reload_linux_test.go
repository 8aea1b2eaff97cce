package supervisor

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A reload starts a whole new generation and drains the old one only once
// every new child is ready.
func TestReloadCommits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2), underSystemd(0))
	h.readyAll(1)
	res := h.reloadAsync()
	h.wantStates("0/1:ready", "0/2:starting", "1/1:ready", "1/2:starting")
	h.ready(h.child(0, 2))
	h.wantStates("0/1:ready", "0/2:ready", "1/1:ready", "1/2:starting")
	h.clock.Advance(5 * time.Millisecond)
	h.ready(h.child(1, 2))
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload = %+v, want generation 2", r)
	}
	h.wantStates("0/2:ready", "1/2:ready")
	if got := attr(h.logs.lines("reload succeeded")[0], "took_ms").Float64(); got != 5 {
		t.Errorf("took_ms = %v, want 5", got)
	}
	got := h.systemd.all()
	if len(got) != 3 || got[0] != "READY=1" || !strings.HasPrefix(got[1], "RELOADING=1\nMONOTONIC_USEC=") || got[2] != "READY=1" {
		t.Errorf("systemd was told %q, want READY, RELOADING with MONOTONIC_USEC, READY", got)
	}
	snap, _ := h.s.Snapshot()
	if snap.Generation != 2 || snap.Reloads[reloadKey("success", StrategyGeneration)] != 1 || snap.ReloadDuration.Count != 1 {
		t.Errorf("snapshot: generation %d, reloads %v, histogram count %d", snap.Generation, snap.Reloads, snap.ReloadDuration.Count)
	}
}

// A new child that fails rolls the reload back: the new generation is
// drained, the old one never stopped.
func TestReloadRollsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	old := []*fakeProc{h.child(0, 1), h.child(1, 1)}
	res := h.reloadAsync()
	serving := h.child(0, 2)
	h.ready(serving)
	h.exit(h.child(1, 2), exitCode(7))
	// Drained, not killed: the new child may serve connections already.
	if got := h.procs.signalsOf(serving.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Errorf("the ready new child got %v, want SIGTERM", got)
	}
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || r.Generation != 1 || !strings.Contains(r.Err.Error(), "slot 1") ||
		!strings.Contains(r.Err.Error(), "exited with code 7") {
		t.Fatalf("reload = %+v, want rolled back naming slot 1 and its exit", r)
	}
	h.wantStates("0/1:ready", "1/1:ready")
	for _, p := range old {
		if got := h.procs.signalsOf(p.pid); len(got) != 0 {
			t.Errorf("old child %d was signalled %v", p.pid, got)
		}
	}
	h.wantReloads("rolled_back", StrategyGeneration, 1)
}

// A new child that never gets ready is killed at the ready timeout, and
// the reload rolls back with that reason.
func TestReloadReadyTimeoutRollsBack(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg)
	h.readyAll(1)
	res := h.reloadAsync()
	h.clock.Advance(cfg.ReadyTimeout)
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "not ready within 10s") {
		t.Fatalf("reload = %+v", r)
	}
	h.wantStates("0/1:ready")
}

// A configuration the loader refuses is rejected: nothing starts.
func TestReloadRejected(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	var mu sync.Mutex
	next := cfg
	h := newHarness(t, cfg, underSystemd(0), loading(func() (Config, error) {
		mu.Lock()
		defer mu.Unlock()
		if next.Workers == 0 {
			return next, errors.New("config: bad")
		}
		return next, nil
	}))
	h.readyAll(1)
	mu.Lock()
	next.Workers = 0
	mu.Unlock()
	r := h.result(h.reloadAsync())
	if !errors.Is(r.Err, ErrReloadRejected) || !strings.Contains(r.Err.Error(), "config: bad") {
		t.Fatalf("reload = %+v, want rejected", r)
	}
	// A configuration that fails validation is rejected too.
	mu.Lock()
	next.Workers, next.Command = 1, []string{"/nonexistent/prefork-test"}
	mu.Unlock()
	r = h.result(h.reloadAsync())
	if !errors.Is(r.Err, ErrReloadRejected) || !strings.Contains(r.Err.Error(), "command") {
		t.Fatalf("reload = %+v, want rejected for the command", r)
	}
	if got := len(h.procs.started()); got != 1 {
		t.Errorf("%d children started, want 1", got)
	}
	if got := h.systemd.all(); got[len(got)-1] != "READY=1" {
		t.Errorf("systemd was told %q; the last must be READY=1", got)
	}
}

// A reload may change the workers, the address and the command; what
// only a restart changes is kept, with a warning.
func TestReloadAppliesNewConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	next := cfg
	next.Workers = 3
	next.Command = []string{"/bin/false", "--flag"}
	next.Metrics = "127.0.0.1:1"
	h := newHarness(t, cfg, loading(func() (Config, error) { return next, nil }))
	h.readyAll(1)
	res := h.reloadAsync()
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.wantStates("0/2:ready", "1/2:ready", "2/2:ready")
	if argv := h.child(2, 2).spec.argv; argv[0] != "/bin/false" && argv[0] != "/usr/bin/false" || argv[1] != "--flag" {
		t.Errorf("argv = %q", argv)
	}
	h.onLoop(func() {
		if h.s.cur.cfg.Metrics != "" {
			t.Errorf("metrics changed on reload to %q", h.s.cur.cfg.Metrics)
		}
	})
	warned := h.logs.lines("settings changed that take effect at the next start")
	if len(warned) != 1 || attr(warned[0], "settings").String() != "[metrics]" {
		t.Errorf("warnings about start-only settings: %v, want one naming metrics", warned)
	}
}

// Requests during a reload coalesce into one more reload, which runs
// after it; every caller gets the outcome of the reload that covered it.
func TestReloadsCoalesce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	first := h.reloadAsync()
	second := h.reloadAsync()
	third := h.reloadAsync()
	h.s.RequestReload()
	h.settle()
	h.ready(h.child(0, 2))
	if r := h.result(first); r.Err != nil || r.Generation != 2 {
		t.Fatalf("first = %+v", r)
	}
	h.wantStates("0/2:ready", "0/3:starting")
	h.ready(h.child(0, 3))
	for _, ch := range []<-chan ReloadResult{second, third} {
		if r := h.result(ch); r.Err != nil || r.Generation != 3 {
			t.Errorf("coalesced = %+v, want generation 3", r)
		}
	}
	h.wantStates("0/3:ready")
}

// A stop during a reload answers every caller with ErrStopping and drains
// both generations.
func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	running := h.reloadAsync()
	queued := h.reloadAsync()
	h.s.Stop(StopGraceful)
	for _, ch := range []<-chan ReloadResult{running, queued} {
		if r := h.result(ch); !errors.Is(r.Err, ErrStopping) {
			t.Errorf("reload = %+v, want ErrStopping", r)
		}
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v", err)
	}
	for _, p := range h.procs.started() {
		if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
			t.Errorf("child %d: %v, want SIGTERM", p.pid, got)
		}
	}
}

// An old child that crashes during a reload is restarted in its own
// generation, which still serves; the reload goes on.
func TestOldChildCrashDuringReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	res := h.reloadAsync()
	h.exit(h.child(1, 1), killedBy(unix.SIGSEGV))
	h.wantStates("0/1:ready", "0/2:starting", "1/1:starting", "1/2:starting")
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.wantStates("0/2:ready", "1/2:ready")
}

// A restart pending in the old generation when a reload commits is
// cancelled: that generation has no business starting anything.
func TestCommitCancelsOldRestarts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	res := h.reloadAsync()
	h.exit(h.child(0, 1), exitCode(1))
	h.exit(h.child(0, 1), exitCode(1)) // second failure: a restart in 100 ms
	var old *slot
	h.onLoop(func() { old = h.s.cur.slots[0] })
	if old.restart == nil {
		t.Fatal("no restart pending in the old generation")
	}
	h.ready(h.child(0, 2))
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.onLoop(func() {
		if old.restart != nil {
			t.Errorf("the commit left the old generation's restart armed")
		}
	})
	starts := len(h.procs.started())
	h.clock.Advance(time.Second)
	if got := len(h.procs.started()); got != starts {
		t.Errorf("the old generation restarted a slot after the commit")
	}
	h.wantStates("0/2:ready")
}

// A start that fails during a reload rolls it back at once.
func TestReloadStartFailureRollsBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	h.procs.mu.Lock()
	h.procs.failStart = func(spec spawnSpec) error {
		if slices.Contains(spec.env, "PREFORK_SLOT=1") {
			return unix.EAGAIN
		}
		return nil
	}
	h.procs.mu.Unlock()
	r := h.result(h.reloadAsync())
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "slot 1") {
		t.Fatalf("reload = %+v", r)
	}
	h.wantStates("0/1:ready", "1/1:ready")
}

// Reload while stopping is refused at once.
func TestReloadWhileStopping(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	h.child(0, 1).ignore[unix.SIGTERM] = true
	h.s.Stop(StopGraceful)
	h.settle()
	if r := h.result(h.reloadAsync()); !errors.Is(r.Err, ErrStopping) {
		t.Errorf("reload = %+v, want ErrStopping", r)
	}
}

// A new child that pinged its watchdog and hung before READY=1 counts for
// nothing: its late READY=1 does not commit the reload, which rolls back
// when it is killed.
func TestReloadHungNewChild(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Watchdog = time.Second
	h := newHarness(t, cfg)
	h.readyAll(1)
	res := h.reloadAsync()
	p := h.child(0, 2)
	p.ignore[unix.SIGQUIT] = true
	h.notify(p, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.ready(p)
	h.wantStates("0/1:ready", "0/2:starting")
	h.clock.Advance(WatchdogGrace)
	r := h.result(res)
	if !errors.Is(r.Err, ErrRolledBack) || !strings.Contains(r.Err.Error(), "watchdog") {
		t.Fatalf("reload = %+v, want rolled back by the watchdog", r)
	}
	h.wantStates("0/1:ready")
}

// The master tells systemd READY=1 once, when the first generation serves
// and no reload runs; a reload asked for before that announces it at its
// commit.
func TestSystemdReadyWaitsForReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1), underSystemd(0))
	res := h.reloadAsync()
	h.ready(h.child(0, 1))
	if got := h.systemd.all(); len(got) != 1 || !strings.HasPrefix(got[0], "RELOADING=1") {
		t.Fatalf("systemd was told %q, want RELOADING only while the reload runs", got)
	}
	h.ready(h.child(0, 2))
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := h.systemd.all(); len(got) != 2 || got[1] != "READY=1" {
		t.Errorf("systemd was told %q, want RELOADING then READY=1", got)
	}
}
