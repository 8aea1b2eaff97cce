package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/proctree"
	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// newChildSteeredHarness starts n children in child socket mode with
// steering on, each given a listener of its own on the address (what the
// fake observer's take finds), all ready; or skips where the program
// does not load or cannot move queues.
func newChildSteeredHarness(t *testing.T, n int) (*harness, Config, []int) {
	t.Helper()
	h, cfg := newChildModeHarness(t, n)
	fds := make([]int, n)
	for i := range n {
		fd, err := sockopt.ListenFD(cfg.Listen[0].Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		fds[i] = fd
		h.observe.listen(h.child(i, 1).pid, fd)
	}
	h.readyAll(1)
	h.waitFor("every child's listener taken", func() bool {
		var held int
		h.onLoop(func() { held = len(h.s.taken.bySlot) })
		return held == n
	})
	return h, cfg, fds
}

// newChildModeHarness starts n children in child socket mode with
// steering on, none ready yet, or skips where the program does not load.
func newChildModeHarness(t *testing.T, n int) (*harness, Config) {
	t.Helper()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, n)
	cfg.Sockets = SocketsChild
	cfg.Steer = SteerOn
	return newHarnessSteering(t, cfg), cfg
}

// acceptFD accepts what fd's queue holds now.
func acceptFD(t *testing.T, fd int) []int {
	t.Helper()
	var conns []int
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EAGAIN) {
			return conns
		}
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		t.Cleanup(func() { unix.Close(nfd) })
		conns = append(conns, nfd)
	}
}

// queueOf returns how many connections wait on fd.
func queueOf(t *testing.T, fd int) uint32 {
	t.Helper()
	q, _, err := sockopt.AcceptQueue(fd)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// dialUntil dials addr until fd's queue holds want connections, at most
// 200 times.
func dialUntil(t *testing.T, addr string, fd int, want uint32, accept func()) []net.Conn {
	t.Helper()
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	for len(clients) < 200 && queueOf(t, fd) < want {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		accept()
	}
	if q := queueOf(t, fd); q < want {
		t.Fatalf("%d connections queued after %d dials, want %d", q, len(clients), want)
	}
	return clients
}

// In child socket mode the master takes each ready child's listener and
// steers the group with the copies: a stuck child's queue is rescued as in
// master socket mode; a child that exits has its copy dropped, so its
// listener closes and its queue moves to the others instead of being
// reset.
func TestChildModeSteered(t *testing.T) {
	t.Parallel()
	h, cfg, fds := newChildSteeredHarness(t, 2)
	skipUnlessMigrates(t, h)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	accept0 := func() {
		for range acceptFD(t, fds[0]) {
			p0.counter.Inc()
		}
	}
	dialUntil(t, cfg.Listen[0].Addr, fds[1], 3, accept0)
	stuck := queueOf(t, fds[1])
	// The checks may have backed off while the group was idle: up to
	// steerIdleMax for the first to see the queue, then the window.
	for i := 0; h.logs.count("steering new connections away from slot") == 0; i++ {
		if i > 40 {
			t.Fatalf("slot 1 held %d connections for %v: not steered away from", stuck, time.Duration(i)*steerInterval)
		}
		h.clock.Advance(steerInterval)
		p0.counter.Inc()
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, h)
		}
	})
	h.waitFor("the rescue", func() bool { return h.logs.count("moved the connections queued on a stuck slot") == 1 })
	if q := queueOf(t, fds[1]); q != 0 {
		t.Errorf("slot 1's listener still holds %d connections after the rescue", q)
	}
	if got := acceptFD(t, fds[0]); uint32(len(got)) != stuck {
		t.Errorf("slot 0 accepted %d after the rescue, want slot 1's %d", len(got), stuck)
	}
	if snap, _ := h.s.Snapshot(); snap.Slots[1].Rescued != uint64(stuck) {
		t.Errorf("slot 1 rescued %d, want %d", snap.Slots[1].Rescued, stuck)
	}

	// Slot 1 accepts again; then its child exits with connections
	// queued: they move to slot 0 when the master drops its copy.
	p1.counter.Inc()
	h.clock.Advance(steerInterval)
	if snap, _ := h.s.Snapshot(); snap.Slots[1].SteeredAway {
		t.Fatalf("slot 1 accepted, still steered away from: %+v", snap.Slots)
	}
	dialUntil(t, cfg.Listen[0].Addr, fds[1], 2, accept0)
	queued := queueOf(t, fds[1])
	unix.Close(fds[1]) // the child's own descriptor goes with it
	fds[1] = -1
	h.exit(p1, exitCode(0))
	var held bool
	h.onLoop(func() { _, held = h.s.taken.byPid[p1.pid] })
	if held {
		t.Fatal("the exited child's listener is still held")
	}
	if got := acceptFD(t, fds[0]); uint32(len(got)) != queued {
		t.Errorf("slot 0 accepted %d after slot 1's child exited, want its %d queued", len(got), queued)
	}
}

// Where a child's listener cannot be taken, steering in child socket mode
// is off, said once, and the children serve as without it.
func TestChildModeSteerRefused(t *testing.T) {
	t.Parallel()
	h, _ := newChildModeHarness(t, 2)
	h.observe.mu.Lock()
	h.observe.takeErr = fmt.Errorf("fake: %w", proctree.ErrNotAllowed)
	h.observe.mu.Unlock()
	h.readyAll(1)
	h.waitFor("steering off", func() bool { return h.logs.count("steering is off in child socket mode") == 1 })
	h.exit(h.child(1, 1), exitCode(1))
	h.ready(h.newest(1))
	h.clock.Advance(steerInterval)
	if n := h.logs.count("steering is off in child socket mode"); n != 1 {
		t.Errorf("said %d times, want once", n)
	}
	if snap, _ := h.s.Snapshot(); snap.Slots[0].SteeredAway || snap.Slots[1].SteeredAway {
		t.Errorf("slots steered away from with steering off: %+v", snap.Slots)
	}
}

func dumpLogs(t *testing.T, h *harness) {
	h.logs.mu.Lock()
	defer h.logs.mu.Unlock()
	for _, r := range h.logs.records {
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		t.Logf("%s%s", r.Message, b.String())
	}
}

// A search for a child's listener that fails for a reason that may pass
// (none found yet) is tried again, with back-off; steering stays on.
func TestChildModeTakeRetried(t *testing.T) {
	t.Parallel()
	h, cfg := newChildModeHarness(t, 2)
	h.observe.mu.Lock()
	h.observe.takeFails = 3 // both first tries and one retry
	h.observe.mu.Unlock()
	for i := range 2 {
		fd, err := sockopt.ListenFD(cfg.Listen[0].Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		h.observe.listen(h.child(i, 1).pid, fd)
	}
	h.readyAll(1)
	for i := 0; ; i++ {
		var held int
		h.onLoop(func() { held = len(h.s.taken.bySlot) })
		if held == 2 {
			break
		}
		if i > 100 {
			t.Fatalf("%d of 2 listeners held after %v of retries", held, time.Duration(i)*10*time.Millisecond)
		}
		h.clock.Advance(10 * time.Millisecond)
		time.Sleep(time.Millisecond) // the retried search runs off the loop
	}
	if n := h.logs.count("steering is off"); n != 0 {
		t.Errorf("steering turned off over a failure that passed")
	}
}

// A stuck slot's child is replaced: the replacement's READY makes the slot
// healthy at once, whatever the rescues of the child before it.
func TestRescuedSlotHealthyAtReplacementReady(t *testing.T) {
	t.Parallel()
	var h slotHealth
	t0 := time.Unix(1000, 0)
	in := healthInput{ready: true, queued: 3, now: t0, window: 100 * time.Millisecond, counting: true}
	h.update(in)
	in.now = t0.Add(100 * time.Millisecond)
	h.update(in)
	h.rescued(in.now)
	h.rescued(in.now) // twice in a row: the blind probe is 2 s away
	h.restart()       // the replacement's READY
	in.now, in.queued = in.now.Add(time.Millisecond), 0
	if h.update(in); !h.healthy {
		t.Error("the replacement is ready: its slot is still steered away from")
	}
}

// In child socket mode a reload's new child takes its slot's place in the
// program's array once ready; when the reload rolls back and it drains,
// the old child, which still serves, takes the place back.
func TestChildModeRollbackRestoresOldCopy(t *testing.T) {
	t.Parallel()
	h, cfg, _ := newChildSteeredHarness(t, 2)
	old := h.child(0, 1)
	res := h.reloadAsync()
	fresh := h.child(0, 2)
	fd, err := sockopt.ListenFD(cfg.Listen[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	h.observe.listen(fresh.pid, fd)
	h.ready(fresh)
	holder := func() int {
		var pid int
		h.onLoop(func() { pid = h.s.taken.holder(cfg.Listen[0].Addr, 0) })
		return pid
	}
	h.waitFor("the new child's listener in the array", func() bool { return holder() == fresh.pid })
	h.exit(h.child(1, 2), exitCode(7))
	if r := h.result(res); !errors.Is(r.Err, ErrRolledBack) {
		t.Fatalf("reload = %+v, want rolled back", r)
	}
	if got := holder(); got != old.pid {
		t.Errorf("slot 0's socket in the array is child %d's, want the old child %d's, which still serves", got, old.pid)
	}
	var held bool
	h.onLoop(func() { _, held = h.s.taken.byPid[fresh.pid] })
	if held {
		t.Error("the drained new child's copy is still held")
	}
}
