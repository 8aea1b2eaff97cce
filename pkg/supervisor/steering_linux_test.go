package supervisor

import (
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/steer"
)

// In master socket mode the master binds one socket per slot and passes
// it as fd 3 by socket activation; with steering, a slot whose child hangs
// is steered away from, and the sockets close when the master stops.
func TestMasterSocketsSteered(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	cfg.Steer = SteerOn
	cfg.Watchdog = time.Second
	h := newHarnessSteering(t, cfg)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	for _, p := range []*fakeProc{p0, p1} {
		if p.env["LISTEN_FDS"] != "1" || p.env["LISTEN_FDNAMES"] != "default" || p.env["PREFORK_COUNTERS_FD"] != "4" ||
			len(p.spec.extra) != 2 || p.spec.argv[1] != ShimCommand {
			t.Fatalf("child of slot %d: env %v, extra %v, argv %q", p.slot(), p.env, p.spec.extra, p.spec.argv)
		}
	}
	if p0.spec.extra[0] == p1.spec.extra[0] {
		t.Errorf("both slots got socket %d", p0.spec.extra[0])
	}
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	snap, _ := h.s.Snapshot()
	if snap.Slots[0].Listeners[0].Inode == 0 || snap.Slots[0].SteeredAway || snap.Slots[1].SteeredAway {
		t.Fatalf("slots after a healthy tick: %+v", snap.Slots)
	}
	p1.ignore[syscall.SIGQUIT] = true
	h.notify(p1, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.clock.Advance(steerInterval)
	snap, _ = h.s.Snapshot()
	if !snap.Slots[1].SteeredAway || snap.Slots[1].SteerChanges != 1 || snap.Slots[0].SteeredAway {
		t.Errorf("slot 1 hung: %+v", snap.Slots)
	}
	// It is killed at the end of its grace; where the program migrates,
	// its socket is renewed so that its queue moves to slot 0.
	h.clock.Advance(WatchdogGrace)
	var migrates bool
	h.onLoop(func() { migrates = h.s.sockets.steerer(cfg.Listen[0].Addr).Migrates() })
	if n := h.logs.count("socket of the slot renewed"); migrates && n != 1 {
		t.Errorf("%d renewals of the crashed slot's socket, want 1", n)
	}
	h.ready(h.child(1, 1))
	h.clock.Advance(steerInterval)
	snap, _ = h.s.Snapshot()
	if snap.Slots[1].SteeredAway {
		t.Errorf("slot 1 still steered away after its replacement was ready")
	}
	if n := h.logs.count("slot takes new connections again"); n != 1 {
		t.Errorf("%d lines of slot 1 coming back, want 1", n)
	}
	if r := h.s.Scale(3); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := h.s.Scale(1); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.s.Stop(StopGraceful)
	h.wait()
	if got := len(h.s.sockets.m); got != 0 {
		t.Errorf("%d sockets held after the stop", got)
	}
}

// newHarnessSteering is newHarness where the steering program loads.
func newHarnessSteering(t *testing.T, cfg Config) *harness {
	return newHarness(t, cfg, func(e *env, _ *Options) { e.steerSupported = steer.Supported })
}
