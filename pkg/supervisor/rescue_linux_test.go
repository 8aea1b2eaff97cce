package supervisor

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// slotQueue returns how many connections wait on slot's socket.
func slotQueue(h *harness, addr string, slot int) uint32 {
	var q uint32
	h.onLoop(func() { q, _ = h.s.sockets.acceptQueue(addr, slot) })
	return q
}

// acceptAll accepts, on a copy of the master's socket of slot, what its
// queue holds now, as the slot's child would, counting each on the
// child's page; it returns the connections.
func acceptAll(t *testing.T, h *harness, addr string, slot int, p *fakeProc) []int {
	t.Helper()
	var fd int
	var err error
	h.onLoop(func() { fd, err = h.s.sockets.fd(addr, slot) })
	if err != nil {
		t.Fatal(err)
	}
	var conns []int
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EAGAIN) {
			return conns
		}
		if err != nil {
			t.Fatalf("accept on slot %d: %v", slot, err)
		}
		t.Cleanup(func() { unix.Close(nfd) })
		conns = append(conns, nfd)
		p.counter.Inc()
	}
}

// skipUnlessMigrates skips where the serving group's steering program
// cannot choose for migrating connections (before Linux 5.14): there
// nothing is rescued.
func skipUnlessMigrates(t *testing.T, h *harness) {
	t.Helper()
	var migrates bool
	h.onLoop(func() { migrates = h.s.steerProgram().Migrates() })
	if !migrates {
		t.Skip("the steering program cannot choose for migrating connections here (Linux 5.14+)")
	}
}

// queueOnSlot1 dials addr until slot 1's socket holds want connections
// (at most 200 dials), slot 0's child p0 accepting its own as it goes.
func queueOnSlot1(t *testing.T, h *harness, addr string, want uint32, p0 *fakeProc) {
	t.Helper()
	dialUntil(t, addr, mustFD(t, h, addr, 1), want, func() { acceptAll(t, h, addr, 0, p0) })
}

// A slot whose child stops accepting with connections queued is steered
// away from, then its processes are frozen, its queue moves to the
// healthy slot, and they are thawed; it stays steered away from until
// its child shows progress again.
func TestRescueMovesStuckQueue(t *testing.T) {
	t.Parallel()
	h, cfg := newSteeredHarness(t, 2)
	skipUnlessMigrates(t, h)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	// Connections until slot 1 holds 4; slot 0's child accepts its own.
	queueOnSlot1(t, h, cfg.Listen[0].Addr, 4, p0)
	stuck := slotQueue(h, cfg.Listen[0].Addr, 1)
	// Slot 1's child accepts nothing for a window: steered away, then
	// rescued.
	// The checks may have backed off while the group was idle: up to
	// steerIdleMax for the first to see the queue, then the window.
	for i := 0; h.logs.count("steering new connections away from slot") == 0; i++ {
		if i > 40 {
			t.Fatalf("slot 1 held %d connections for %v: not steered away from", stuck, time.Duration(i)*steerInterval)
		}
		h.clock.Advance(steerInterval)
		p0.counter.Inc() // slot 0 keeps showing progress
	}
	h.waitFor("the rescue", func() bool { return h.logs.count("moved the connections queued on a stuck slot") == 1 })
	freezes, frozenNow := h.observe.freezeState()
	if freezes != 1 || len(frozenNow) != 0 {
		t.Errorf("freezes %d, frozen now %v: want 1 freeze, thawed", freezes, frozenNow)
	}
	if q := slotQueue(h, cfg.Listen[0].Addr, 1); q != 0 {
		t.Errorf("slot 1 still holds %d connections after the rescue", q)
	}
	moved := acceptAll(t, h, cfg.Listen[0].Addr, 0, p0)
	if uint32(len(moved)) != stuck {
		t.Errorf("slot 0 accepted %d connections after the rescue, want the %d of slot 1", len(moved), stuck)
	}
	for _, fd := range moved {
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			t.Errorf("a moved connection: %v", err)
		}
	}
	snap, _ := h.s.Snapshot()
	if snap.Slots[1].Rescued != uint64(stuck) || snap.Slots[0].Rescued != 0 {
		t.Errorf("rescued counts %d, %d; want 0, %d", snap.Slots[0].Rescued, snap.Slots[1].Rescued, stuck)
	}
	// Its queue is empty, but that is the rescue's doing: still steered
	// away from until its child accepts.
	h.clock.Advance(steerInterval)
	if snap, _ := h.s.Snapshot(); !snap.Slots[1].SteeredAway {
		t.Fatalf("slot 1 healthy right after its rescue: %+v", snap.Slots)
	}
	p1.counter.Inc()
	h.clock.Advance(steerInterval)
	if snap, _ := h.s.Snapshot(); snap.Slots[1].SteeredAway {
		t.Errorf("slot 1 accepted after its rescue, still steered away from: %+v", snap.Slots)
	}
	if _, _, err := sockopt.AcceptQueue(mustFD(t, h, cfg.Listen[0].Addr, 1)); err != nil {
		t.Errorf("slot 1's socket after the rescue: %v", err)
	}
	if !slices.Contains(h.observe.frozenEver(), p1.pid) {
		t.Errorf("slot 1's child %d was not among those frozen: %v", p1.pid, h.observe.frozenEver())
	}
}

func mustFD(t *testing.T, h *harness, addr string, slot int) int {
	t.Helper()
	var fd int
	var err error
	h.onLoop(func() { fd, err = h.s.sockets.fd(addr, slot) })
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// A rescued slot whose child shows no progress is given connections again
// after a probe, to see whether it resumed: 1 s after the rescue with no
// CPU used, 100 ms with; each doubles with every rescue in a row.
func TestSlotHealthRescueProbe(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	in := func(ms int, accepts uint64, queued uint32) healthInput {
		return healthInput{ready: true, accepts: accepts, queued: queued, now: t0.Add(time.Duration(ms) * time.Millisecond),
			window: 100 * time.Millisecond, counting: true}
	}
	cpu := func(ms int, accepts uint64, d time.Duration) healthInput {
		i := in(ms, accepts, 0)
		i.timed, i.cpu = true, d
		return i
	}
	var h slotHealth
	stick := func(ms int, accepts uint64) {
		t.Helper()
		h.update(in(ms, accepts, 3))
		if h.update(in(ms+100, accepts, 3)); h.healthy {
			t.Fatalf("%d ms: queue held a window, healthy", ms+100)
		}
		h.rescued(t0.Add(time.Duration(ms+100) * time.Millisecond))
	}
	h.update(in(0, 5, 0))
	stick(50, 5) // rescued at 150
	for _, ms := range []int{175, 500, 1149} {
		if h.update(in(ms, 5, 0)); h.healthy {
			t.Fatalf("%d ms: healthy with an empty queue, no CPU known, before the 1 s probe", ms)
		}
	}
	if h.update(in(1150, 5, 0)); !h.healthy {
		t.Fatal("blind probe due 1 s after the rescue: not healthy")
	}
	stick(1160, 5) // rescued at 1260: the second in a row
	if h.update(in(3259, 5, 0)); h.healthy {
		t.Fatal("second blind probe before 2 s")
	}
	if h.update(in(3260, 5, 0)); !h.healthy {
		t.Fatal("second blind probe due after 2 s: not healthy")
	}
	// An accept ends it at once, and the next probes start afresh.
	stick(3300, 5) // rescued at 3400, the third
	if h.update(in(3425, 6, 0)); !h.healthy {
		t.Fatal("accepted after the rescue: not healthy")
	}
	stick(3500, 6) // rescued at 3600, the first again
	if h.update(cpu(3625, 6, 10)); h.healthy {
		t.Fatal("a first CPU reading is a baseline, not progress")
	}
	if h.update(cpu(3650, 6, 20)); h.healthy {
		t.Fatal("CPU used, but before the 100 ms probe")
	}
	if h.update(cpu(3700, 6, 20)); !h.healthy {
		t.Fatal("CPU used after the rescue, 100 ms probe due: not healthy")
	}
	// Stopped for good, probed and rescued again and again: the blind
	// probe stops growing at 8 s.
	at := 3700
	for range 6 {
		stick(at+10, 6)
		at += 110
		for h.update(in(at, 6, 0)); !h.healthy; h.update(in(at, 6, 0)) {
			at += 100
		}
	}
	stick(at+10, 6)
	rescuedAt := at + 110
	at = rescuedAt
	for h.update(in(at, 6, 0)); !h.healthy; h.update(in(at, 6, 0)) {
		at += 100
	}
	if d := time.Duration(at-rescuedAt) * time.Millisecond; d != rescueBlindProbeMax {
		t.Errorf("the 8th rescue in a row probed after %v, want %v", d, rescueBlindProbeMax)
	}
}

// A rescue whose slot changed while its holders were being frozen (the
// child crashed and the slot's socket was renewed) moves nothing: the
// processes now holding the socket were not frozen. It thaws what it
// froze.
func TestRescueStaleAfterCrash(t *testing.T) {
	t.Parallel()
	h, cfg := newSteeredHarness(t, 2)
	skipUnlessMigrates(t, h)
	gate := make(chan struct{})
	h.observe.mu.Lock()
	h.observe.gate = gate
	h.observe.mu.Unlock()
	released := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(released)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	queueOnSlot1(t, h, cfg.Listen[0].Addr, 2, p0)
	// The loop begins the rescue; its goroutine freezes the holders a
	// moment later, which under load can be many ticks later.
	for i := 0; ; i++ {
		var began bool
		h.onLoop(func() { began = len(h.s.steering.rescue.inFlight) > 0 })
		if began {
			break
		}
		if i > 40 {
			t.Fatal("no rescue began")
		}
		h.clock.Advance(steerInterval)
		p0.counter.Inc()
	}
	h.waitFor("the rescue freezing the holders", func() bool {
		freezes, _ := h.observe.freezeState()
		return freezes > 0
	})
	h.exit(p1, killedBy(unix.SIGKILL)) // renews slot 1's socket
	released()
	h.waitFor("the freeze thawed", func() bool {
		_, now := h.observe.freezeState()
		var busy bool
		h.onLoop(func() { _, busy = h.s.steering.rescue.inFlight[1] })
		return len(now) == 0 && !busy
	})
	if n := h.logs.count("moved the connections queued on a stuck slot"); n != 0 {
		t.Errorf("%d rescues of a slot whose socket was renewed during the freeze", n)
	}
}
