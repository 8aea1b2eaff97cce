package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartsEverySlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 3))
	h.wantStates("0/1:starting", "1/1:starting", "2/1:starting")
	p := h.child(1, 1)
	var listen string
	h.onLoop(func() { listen = h.s.cur.cfg.Listen[0].Addr })
	for k, want := range map[string]string{
		"PREFORK_SLOT": "1", "PREFORK_GENERATION": "1", "PREFORK_WORKERS": "3",
		"PREFORK_LISTEN": listen, "NOTIFY_SOCKET": h.s.notify.addr, "PREFORK_COUNTERS_FD": "3",
	} {
		if got := p.env[k]; got != want {
			t.Errorf("child env %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := p.env["LISTEN_FDS"]; ok {
		t.Errorf("child socket mode passes LISTEN_FDS")
	}
	h.readyAll(1)
	h.wantStates("0/1:ready", "1/1:ready", "2/1:ready")
}

// A crash of a long-serving child restarts its slot at once; crashes in a
// row back off, doubling; a child ready for BackoffReset wipes the slate.
func TestCrashBackoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	delays := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	for i, want := range delays {
		starts := len(h.procs.started())
		h.exit(h.newest(0), exitCode(3))
		if want > 0 {
			h.clock.Advance(want - time.Millisecond)
			if got := len(h.procs.started()); got != starts {
				t.Fatalf("crash %d: restarted before its %v delay", i+1, want)
			}
			h.clock.Advance(time.Millisecond)
		}
		if got := len(h.procs.started()); got != starts+1 {
			t.Fatalf("crash %d: %d starts after %v, want %d", i+1, got, want, starts+1)
		}
		if got := attr(h.logs.lines("restarting slot")[i], "in_ms").Float64(); got != millis(want) {
			t.Errorf("crash %d: logged in_ms=%v, want %v", i+1, got, millis(want))
		}
		if got := attr(h.logs.lines("child exited unexpectedly")[i], "code").Int64(); got != 3 {
			t.Errorf("crash %d: logged code=%v, want 3", i+1, got)
		}
	}
	// Ready for BackoffReset: the next crash restarts at once again.
	h.ready(h.newest(0))
	h.clock.Advance(BackoffReset)
	starts := len(h.procs.started())
	h.exit(h.newest(0), killedBy(unix.SIGKILL))
	if got := len(h.procs.started()); got != starts+1 {
		t.Errorf("a crash after %v ready did not restart at once", BackoffReset)
	}
	if got := h.status().Children[0].Restarts; got != len(delays)+1 {
		t.Errorf("restarts = %d, want %d", got, len(delays)+1)
	}
}

// A start that fails (exec error) counts against the slot like an exit,
// and is said once while it fails the same way.
func TestFailedStartBacksOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg)
	h.procs.mu.Lock()
	h.procs.failStart = func(spawnSpec) error { return unix.ENOEXEC }
	h.procs.mu.Unlock()
	h.exit(h.newest(0), exitCode(1)) // first failure: restart at once, which fails
	if n := h.logs.count("child failed to start"); n != 1 {
		t.Fatalf("%d failed starts logged, want 1", n)
	}
	h.clock.Advance(100 * time.Millisecond) // the failed start was the second failure
	// The same failure again is said once, then only at debug level.
	if n, again := h.logs.count("child failed to start"), h.logs.count("slot still fails to start"); n != 1 || again != 1 {
		t.Fatalf("after the backoff: %d failed starts logged, %d again; want 1 and 1", n, again)
	}
	h.procs.mu.Lock()
	h.procs.failStart = nil
	h.procs.mu.Unlock()
	h.clock.Advance(200 * time.Millisecond)
	h.wantStates("0/1:starting")
}

// A child that does not say READY=1 in time is killed and restarted; its
// exit is logged with the reason.
func TestReadyTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg)
	p := h.child(0, 1)
	p.lingers = true
	h.clock.Advance(cfg.ReadyTimeout - time.Millisecond)
	if got := h.procs.signalsOf(p.pid); len(got) != 0 {
		t.Fatalf("signalled %v before the ready timeout", got)
	}
	h.clock.Advance(time.Millisecond)
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGKILL}) {
		t.Fatalf("signals = %v, want SIGKILL", got)
	}
	// A READY=1 that was queued behind the timeout comes too late, even
	// before the exit is reaped.
	h.ready(p)
	if n := h.logs.count("child ready"); n != 0 {
		t.Errorf("a late child was made ready")
	}
	h.exit(p, killedBy(unix.SIGKILL))
	exits := h.logs.lines("child exited unexpectedly")
	if len(exits) != 1 || attr(exits[0], "reason").String() != "not ready in time" {
		t.Errorf("exit lines = %v, want one with reason not ready in time", exits)
	}
	h.wantStates("0/1:starting")
	if h.newest(0) == p {
		t.Errorf("the slot was not restarted")
	}
}

// A notification from a process the child started counts as the child's
// (NotifyAccess=all); one from elsewhere is ignored.
func TestNotifyFromDescendant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	p := h.child(0, 1)
	h.procs.mu.Lock()
	h.procs.parents[5001] = 5000
	h.procs.parents[5000] = p.pid
	h.procs.parents[6000] = 1
	h.procs.mu.Unlock()
	h.notify(&fakeProc{pid: 6000}, notification{Ready: true})
	h.wantStates("0/1:starting")
	h.notify(&fakeProc{pid: 5001}, notification{Ready: true})
	h.wantStates("0/1:ready")
}

// A process the master did not start (an orphan re-parented to it) is
// reaped and otherwise ignored.
func TestOrphanReaped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	h.procs.end(4242, exitCode(0))
	h.settle()
	h.wantStates("0/1:ready")
	if n := h.logs.count("child exited"); n != 0 {
		t.Errorf("an orphan's exit was logged as a child's")
	}
}

// A graceful stop drains every child and returns nil once all are gone.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2), underSystemd(0))
	h.readyAll(1)
	h.s.Stop(StopGraceful)
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	for _, p := range h.procs.started() {
		if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
			t.Errorf("child %d got %v, want SIGTERM", p.pid, got)
		}
	}
	if got, want := h.systemd.all(), []string{"READY=1", "STOPPING=1"}; !slices.Equal(got, want) {
		t.Errorf("systemd was told %q, want %q", got, want)
	}
	if _, err := h.s.Status(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Status after Run = %v, want ErrNotRunning", err)
	}
	if r := h.s.Reload(context.Background()); !errors.Is(r.Err, ErrNotRunning) {
		t.Errorf("Reload after Run = %v, want ErrNotRunning", r.Err)
	}
}

// A child still draining at the drain timeout is killed, and Run says
// the stop cut work short; a fast stop kills at once.
func TestStopDrainCut(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	h := newHarness(t, cfg)
	h.readyAll(1)
	slow := h.child(1, 1)
	slow.ignore[unix.SIGTERM] = true
	h.s.Stop(StopGraceful)
	h.settle()
	h.clock.Advance(cfg.DrainTimeout - time.Millisecond)
	if got := h.procs.signalsOf(slow.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Fatalf("before the drain timeout: %v", got)
	}
	h.clock.Advance(time.Millisecond)
	if err := h.wait(); !errors.Is(err, ErrDrainCut) {
		t.Errorf("Run = %v, want ErrDrainCut", err)
	}
}

func TestFastStopEscalates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	p := h.child(0, 1)
	p.ignore[unix.SIGTERM] = true
	h.s.Stop(StopGraceful)
	h.settle()
	h.s.Stop(StopFast)
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v, want nil (a fast stop cuts on purpose)", err)
	}
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM, unix.SIGKILL}) {
		t.Errorf("signals = %v, want SIGTERM then SIGKILL", got)
	}
}

// A stop cancels pending restarts, and a crash while stopping is not
// restarted.
func TestStopCancelsRestarts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	h.exit(h.child(0, 1), exitCode(1))
	h.exit(h.newest(0), exitCode(1)) // now a restart is pending
	other := h.child(1, 1)
	other.ignore[unix.SIGTERM] = true
	var pending timer
	h.onLoop(func() { pending = h.s.cur.slots[0].restart })
	if pending == nil {
		t.Fatal("no restart pending after two crashes in a row")
	}
	h.s.Stop(StopGraceful)
	h.settle()
	h.onLoop(func() {
		if h.s.cur.slots[0].restart != nil || pending.(*fakeTimer).active {
			t.Errorf("the stop left the restart armed")
		}
	})
	starts := len(h.procs.started())
	h.clock.Advance(time.Second)
	h.exit(other, exitCode(0))
	if err := h.wait(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := len(h.procs.started()); got != starts {
		t.Errorf("%d children started while stopping", got-starts)
	}
}

// Cancelling Run's context is a graceful stop.
func TestContextStops(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	clk := newFakeClock()
	procs := newFakeProcs(clk)
	s, err := newSupervisor(cfg, Options{}, env{procs: procs, clock: clk, observe: newFakeObserver(), steerSupported: func() error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if _, err := s.Status(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the context ended")
	}
	if got := procs.signalsOf(procs.started()[0].pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Errorf("signals = %v, want SIGTERM", got)
	}
}

// A fork refused for a process limit (EAGAIN) is a failed start like any,
// but osProcs says the limit once for every slot: the slots say nothing
// more than debug lines.
func TestFailedForkSaidOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.procs.mu.Lock()
	h.procs.failStart = func(spawnSpec) error {
		return fmt.Errorf("exec /bin/true: %w", &forkLimitError{cause: "the process limit of uid 1 is reached", err: unix.EAGAIN})
	}
	h.procs.mu.Unlock()
	h.exit(h.newest(0), exitCode(1))
	h.exit(h.newest(1), exitCode(1))
	h.clock.Advance(time.Second)
	if n := h.logs.count("child failed to start"); n != 0 {
		t.Errorf("%d \"child failed to start\" lines for a process limit, want 0", n)
	}
	if n := h.logs.count("slot still fails to start"); n < 2 {
		t.Errorf("%d debug lines of failed starts, want one per attempt of each slot", n)
	}
	h.wantStates("0/1:backoff", "1/1:backoff")
}

// A child not ready in time while the master's stderr takes no line is
// told to be probably blocked writing there, not to ignore its socket.
func TestReadyTimeoutStalledLog(t *testing.T) {
	t.Parallel()
	for _, stalled := range []time.Duration{0, 5 * time.Second} {
		cfg := testConfig(t, 1)
		cfg.Sockets = SocketsMaster
		h := newHarness(t, cfg, func(_ *env, o *Options) { o.LogStalled = func() time.Duration { return stalled } })
		p := h.child(0, 1)
		p.lingers = true
		h.clock.Advance(cfg.ReadyTimeout)
		lines := h.logs.lines("child not ready in time; killing it")
		if len(lines) != 1 {
			t.Fatalf("stalled %v: %d ready-timeout lines, want 1", stalled, len(lines))
		}
		hint := attr(lines[0], "hint").String()
		if got := strings.Contains(hint, "stderr has taken no line for 5s"); got != (stalled > 0) {
			t.Errorf("stalled %v: hint %q", stalled, hint)
		}
		if stalled == 0 && !strings.Contains(hint, "LISTEN_FDS") {
			t.Errorf("not stalled: hint %q, want the fd 3 one", hint)
		}
		h.exit(p, killedBy(unix.SIGKILL))
	}
}
