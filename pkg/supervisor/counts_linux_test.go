package supervisor

import (
	"net"
	"sync"
	"testing"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// pagedChild returns a child of a generation serving listen, with a
// counter page, and the child's own mapping of it.
func pagedChild(t *testing.T, listen Listeners) (*child, *counters.Counter) {
	t.Helper()
	page, err := counters.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	fd, err := unix.Dup(page.FD())
	if err != nil {
		t.Fatal(err)
	}
	counter, err := counters.OpenCounter(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Close() })
	cfg := DefaultConfig()
	cfg.Listen = listen
	return &child{gen: &generation{cfg: cfg}, page: page}, counter
}

// A child that counts every accept on its listener while the master
// reads its page: no accept of the second listener is ever taken for one
// of the first (the total is ahead of the listeners' counters for a
// moment), so the listeners add up to the accepts, exactly.
func TestCountsWhileCounting(t *testing.T) {
	t.Parallel()
	c, counter := pagedChild(t, Listeners{{Name: "http", Network: NetTCP, Addr: "127.0.0.1:1"},
		{Name: "admin", Network: NetTCP, Addr: "127.0.0.1:2"}})
	const n = 200000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			counter.Accept(1)
		}
	}()
	for c.page.Listener(1) < n {
		c.counts()
	}
	wg.Wait()
	got := c.counts()
	if got[0] != 0 || got[1] != n {
		t.Errorf("counts %v after %d accepts on admin, want [0 %d]", got, n, n)
	}
}

// With two TCP listeners, the accepts of the second one ran no program of
// the first one's group: they neither make the checks believe that group's
// program gone nor show a child stuck on the first listener progressing.
func TestSteeringWatchesItsListenerOnly(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 1)
	cfg.Sockets, cfg.Steer = SocketsMaster, SteerOn
	cfg.Listen = Listeners{{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "admin", Network: NetTCP, Addr: testkit.FreeAddr(t)}}
	h := newHarnessSteering(t, cfg)
	p := h.child(0, 1)
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	h.clock.Advance(steerInterval)
	for range 2 * watchSlack {
		p.counter.Accept(1)
	}
	h.clock.Advance(steerInterval)
	if n := h.logs.count("the group's steering program no longer chooses"); n != 0 {
		t.Errorf("%d alarms of a program gone, for accepts on another listener", n)
	}
}

// A child whose connections wait on the first TCP listener while it
// accepts only on another one is stuck where steering looks: it is
// steered away from.
func TestSteeringStuckOnItsListener(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets, cfg.Steer = SocketsMaster, SteerOn
	cfg.Listen = Listeners{{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "admin", Network: NetTCP, Addr: testkit.FreeAddr(t)}}
	h := newHarnessSteering(t, cfg)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	for queued := uint32(0); queued == 0; {
		c, err := net.Dial("tcp", cfg.Listen[0].Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		h.onLoop(func() { queued, _ = h.s.sockets.acceptQueue(cfg.Listen[0].key(), 0) })
	}
	for range 2 * DefaultStuckWindow / steerInterval {
		p0.counter.Accept(1)
		p1.counter.Accept(0)
		h.clock.Advance(steerInterval)
	}
	if snap, _ := h.s.Snapshot(); !snap.Slots[0].SteeredAway {
		t.Errorf("slot 0: connections queued on http for %v and none accepted there, but not steered away", 2*DefaultStuckWindow)
	}
}

// A rolling reload that reorders the TCP listeners changes the one
// steering watches: its slots' new children, on the other listener's
// terms, would look missing to the checks of the old one, and each slot
// be steered away from as soon as its old child drained. It goes by
// generation instead.
func TestRollingReorderSteered(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := rollingConfig(t, 2, 1)
	cfg.Sockets, cfg.Steer = SocketsMaster, SteerOn
	cfg.Listen = Listeners{{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "admin", Network: NetTCP, Addr: testkit.FreeAddr(t)}}
	next := cfg
	next.Listen = Listeners{cfg.Listen[1], cfg.Listen[0]}
	h := newHarness(t, cfg, func(e *env, o *Options) {
		e.steerSupported = steer.Supported
		o.Load = func() (Config, error) { return next, nil }
	})
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	res := h.reloadAsync()
	h.ready(h.child(0, 2))
	h.clock.Advance(steerInterval)
	if snap, _ := h.s.Snapshot(); snap.Slots[0].SteeredAway {
		t.Errorf("slot 0 steered away from while its new child serves: %+v", snap.Slots[0])
	}
	h.readyAll(2)
	h.clock.Advance(steerInterval)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload: %+v", r)
	}
}
