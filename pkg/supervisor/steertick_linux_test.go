package supervisor

import (
	"net"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// newSteeredHarness starts n ready children in master socket mode with
// steering on, or skips where the program does not load.
func newSteeredHarness(t *testing.T, n int) (*harness, Config) {
	t.Helper()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, n)
	cfg.Sockets = SocketsMaster
	cfg.Steer = SteerOn
	h := newHarnessSteering(t, cfg)
	h.readyAll(1)
	return h, cfg
}

// steerPeriod returns the health checks' period now.
func steerPeriod(h *harness) time.Duration {
	var d time.Duration
	h.onLoop(func() { d = h.s.steering.period })
	return d
}

// wantBackedOff checks that the health checks backed off to
// steerIdleMax, at least 4 times steerInterval.
func wantBackedOff(t *testing.T, h *harness) {
	t.Helper()
	if d := steerPeriod(h); d != steerIdleMax || d < 4*steerInterval {
		t.Fatalf("idle for 1 s: checks every %v, want %v (at least %v)", d, steerIdleMax, 4*steerInterval)
	}
}

// While the group is idle the health checks back off to steerIdleMax; the
// first check that sees a connection comes back to steerInterval, and a
// slot whose child takes none is still steered away from within the stuck
// window of that check.
func TestSteerChecksBackOffWhileIdle(t *testing.T) {
	t.Parallel()
	h, cfg := newSteeredHarness(t, 2)
	h.clock.Advance(time.Second)
	wantBackedOff(t, h)
	if snap, _ := h.s.Snapshot(); snap.Slots[0].SteeredAway || snap.Slots[1].SteeredAway {
		t.Fatalf("idle: %+v", snap.Slots)
	}
	// A connection: it waits in one slot's queue, whose fake child never
	// accepts it.
	conn, err := net.Dial("tcp", cfg.Listen[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Up to the check that sees it, at most steerIdleMax away.
	for waited := time.Duration(0); steerPeriod(h) != steerInterval; waited += time.Millisecond {
		if waited > steerIdleMax {
			t.Fatalf("a connection queued for %v: checks every %v, want %v", waited, steerPeriod(h), steerInterval)
		}
		h.clock.Advance(time.Millisecond)
	}
	// Not stuck at the check that first saw it, though the check before
	// was steerIdleMax earlier.
	if snap, _ := h.s.Snapshot(); snap.Slots[0].SteeredAway || snap.Slots[1].SteeredAway {
		t.Fatalf("stuck at first sight: %+v", snap.Slots)
	}
	h.clock.Advance(DefaultStuckWindow)
	snap, _ := h.s.Snapshot()
	if snap.Slots[0].SteeredAway == snap.Slots[1].SteeredAway {
		t.Fatalf("one slot held a connection for %v: %+v", DefaultStuckWindow, snap.Slots)
	}
	h.clock.Advance(time.Second)
	if d := steerPeriod(h); d != steerInterval {
		t.Errorf("a slot steered away from: checks every %v, want %v", d, steerInterval)
	}
}

// A crash makes the backed-off checks come back to steerInterval at once,
// and the replacement's READY makes its slot healthy at once, without
// waiting for a check.
func TestSteerReadyAtOnce(t *testing.T) {
	t.Parallel()
	h, _ := newSteeredHarness(t, 2)
	h.clock.Advance(time.Second)
	wantBackedOff(t, h)
	h.exit(h.child(1, 1), killedBy(unix.SIGKILL))
	if d := steerPeriod(h); d != steerInterval {
		t.Errorf("a slot crashed: checks every %v, want %v", d, steerInterval)
	}
	if snap, _ := h.s.Snapshot(); !snap.Slots[1].SteeredAway {
		t.Fatalf("slot 1 crashed: %+v", snap.Slots)
	}
	h.ready(h.newest(1)) // no clock advance: no check runs
	if snap, _ := h.s.Snapshot(); snap.Slots[1].SteeredAway {
		t.Errorf("slot 1 still steered away from after its replacement's READY: %+v", snap.Slots)
	}
	if n := h.logs.count("slot takes new connections again"); n != 1 {
		t.Errorf("%d lines of slot 1 coming back, want 1", n)
	}
}

// A missed watchdog steers away from the slot at once, not at the next
// backed-off check.
func TestSteerWatchdogAtOnce(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	cfg.Steer = SteerOn
	cfg.Watchdog = 5 * time.Second
	h := newHarnessSteering(t, cfg)
	h.readyAll(1)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	p1.ignore[unix.SIGQUIT] = true
	h.notify(p1, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.notify(p0, notification{Watchdog: true}) // p0 lives on past p1's expiry
	wantBackedOff(t, h)
	h.clock.Advance(cfg.Watchdog - time.Second - time.Millisecond)
	if snap, _ := h.s.Snapshot(); snap.Slots[1].SteeredAway {
		t.Fatalf("steered away before the watchdog expired: %+v", snap.Slots)
	}
	h.clock.Advance(time.Millisecond) // p1's watchdog expires, at this very time
	if n := h.logs.count("child missed its watchdog"); n != 1 {
		t.Fatalf("%d watchdog expiries, want 1", n)
	}
	if snap, _ := h.s.Snapshot(); !snap.Slots[1].SteeredAway {
		t.Errorf("slot 1 missed its watchdog, not steered away from: %+v", snap.Slots)
	}
}
