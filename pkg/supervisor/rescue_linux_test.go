package supervisor

import (
	"errors"
	"net"
	"slices"
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

// A slot whose child stops accepting with connections queued is steered
// away from, then its processes are frozen, its queue moves to the
// healthy slot, and they are thawed; it stays steered away from until
// its child shows progress again.
func TestRescueMovesStuckQueue(t *testing.T) {
	t.Parallel()
	h, cfg := newSteeredHarness(t, 2)
	var migrates bool
	h.onLoop(func() { migrates = h.s.sockets.steerer(cfg.Listen).Migrates() })
	if !migrates {
		t.Skip("the steering program cannot choose for migrating connections here (Linux 5.14+)")
	}
	p0, p1 := h.child(0, 1), h.child(1, 1)
	// Connections until slot 1 holds 4; slot 0's child accepts its own.
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	for len(clients) < 200 && slotQueue(h, cfg.Listen, 1) < 4 {
		c, err := net.Dial("tcp", cfg.Listen)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		acceptAll(t, h, cfg.Listen, 0, p0)
	}
	stuck := slotQueue(h, cfg.Listen, 1)
	if stuck < 4 {
		t.Fatalf("slot 1 holds %d connections after %d dials", stuck, len(clients))
	}
	// Slot 1's child accepts nothing for a window: steered away, then
	// rescued.
	for range 5 {
		h.clock.Advance(steerInterval)
		p0.counter.Inc() // slot 0 keeps showing progress
	}
	h.waitFor("the rescue", func() bool { return h.logs.count("moved the connections queued on a stuck slot") == 1 })
	freezes, frozenNow := h.observe.freezeState()
	if freezes != 1 || len(frozenNow) != 0 {
		t.Errorf("freezes %d, frozen now %v: want 1 freeze, thawed", freezes, frozenNow)
	}
	if q := slotQueue(h, cfg.Listen, 1); q != 0 {
		t.Errorf("slot 1 still holds %d connections after the rescue", q)
	}
	moved := acceptAll(t, h, cfg.Listen, 0, p0)
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
	if _, _, err := sockopt.AcceptQueue(mustFD(t, h, cfg.Listen, 1)); err != nil {
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
// after the probe, to see whether it resumed.
func TestSlotHealthRescueProbe(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	in := func(ms int, accepts uint64, queued uint32) healthInput {
		return healthInput{ready: true, accepts: accepts, queued: queued, now: t0.Add(time.Duration(ms) * time.Millisecond),
			window: 100 * time.Millisecond, counting: true}
	}
	var h slotHealth
	h.update(in(0, 5, 0))
	h.update(in(50, 5, 3))
	if h.update(in(150, 5, 3)); h.healthy {
		t.Fatal("queue held a window: healthy")
	}
	h.rescued(t0.Add(160 * time.Millisecond))
	for _, ms := range []int{175, 500, 1100} {
		if h.update(in(ms, 5, 0)); h.healthy {
			t.Fatalf("%d ms: healthy with an empty queue right after the rescue", ms)
		}
	}
	if h.update(in(1160, 5, 0)); !h.healthy {
		t.Fatal("probe due after 1 s: not healthy")
	}
	// Stuck again at once: rescued again, and the probe doubles.
	h.update(in(1170, 5, 2))
	h.update(in(1270, 5, 2))
	h.rescued(t0.Add(1280 * time.Millisecond))
	if h.update(in(2290, 5, 0)); h.healthy {
		t.Fatal("second probe after 1 s, want 2 s")
	}
	if h.update(in(3280, 5, 0)); !h.healthy {
		t.Fatal("second probe due after 2 s: not healthy")
	}
	// An accept ends the probation at once.
	h.update(in(3300, 5, 2))
	h.update(in(3400, 5, 2))
	h.rescued(t0.Add(3400 * time.Millisecond))
	if h.update(in(3425, 6, 0)); !h.healthy {
		t.Fatal("accepted after the rescue: not healthy")
	}
	// So does CPU used, for a child that has nothing to accept.
	h.update(in(3500, 6, 2))
	h.update(in(3600, 6, 2))
	h.rescued(t0.Add(3600 * time.Millisecond))
	cpu := func(ms int, d time.Duration) healthInput {
		i := in(ms, 6, 0)
		i.timed, i.cpu = true, d
		return i
	}
	if h.update(cpu(3625, 10)); h.healthy {
		t.Fatal("a first CPU reading is a baseline, not progress")
	}
	if h.update(cpu(3650, 10)); h.healthy {
		t.Fatal("no CPU used: healthy")
	}
	if h.update(cpu(3675, 20)); !h.healthy {
		t.Fatal("CPU used after the rescue: not healthy")
	}
}
