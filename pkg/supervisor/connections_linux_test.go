package supervisor

import (
	"net"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/steer"
)

// dialQueued opens k connections to addr that nobody accepts (the fake
// children never do): each ran the steering program at its SYN.
func dialQueued(t *testing.T, addr string, k int) {
	t.Helper()
	for range k {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// sumConnections returns the snapshot's connection counts over every slot,
// placed and unplaced.
func sumConnections(t *testing.T, h *harness) (placed, unplaced uint64) {
	t.Helper()
	snap, err := h.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Steered || snap.ConnectionsErr != nil {
		t.Fatalf("snapshot: steered %v, error %v", snap.Steered, snap.ConnectionsErr)
	}
	for _, sl := range snap.Slots {
		placed += sl.Connections
	}
	return placed, snap.Unplaced
}

// The program's per-slot counts are in the snapshot, and a reload that
// moves the address (a new group, a new program; the old one is closed
// with its listeners) folds the old program's counts into the slot's
// total instead of losing them: the total never goes down.
func TestConnectionsSurviveProgramReplaced(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	cfg.Steer = SteerOn
	next := cfg
	next.Listen = tcpListen(testkit.FreeAddr(t))
	h := newHarness(t, cfg, func(e *env, o *Options) {
		e.steerSupported = steer.Supported
		o.Load = func() (Config, error) { return next, nil }
	})
	h.readyAll(1)
	h.clock.Advance(steerInterval) // both slots healthy: the program places
	dialQueued(t, cfg.Listen[0].Addr, 10)
	if placed, unplaced := sumConnections(t, h); placed != 10 || unplaced != 0 {
		t.Fatalf("after 10 connections: %d placed, %d unplaced", placed, unplaced)
	}

	res := h.reloadAsync()
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload: %+v", r)
	}
	h.waitFor("the old address's program closed", func() bool {
		var n int
		h.onLoop(func() { n = len(h.s.sockets.steerers) })
		return n == 1
	})
	if placed, _ := sumConnections(t, h); placed != 10 {
		t.Errorf("after the reload moved the address: %d placed, want the old program's 10", placed)
	}
	h.clock.Advance(steerInterval)
	dialQueued(t, next.Listen[0].Addr, 5)
	if placed, unplaced := sumConnections(t, h); placed != 15 || unplaced != 0 {
		t.Errorf("after 5 more on the new address: %d placed, %d unplaced, want 15 and 0", placed, unplaced)
	}
}
