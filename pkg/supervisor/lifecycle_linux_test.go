package supervisor

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
	"golang.org/x/sys/unix"
)

// inc counts n accepts on p's page, as the child library would.
func inc(t *testing.T, p *fakeProc, n int) {
	t.Helper()
	if p.counter == nil {
		t.Fatalf("child %d has no counter page", p.pid)
	}
	for range n {
		p.counter.Inc()
	}
}

// A child past --max-accepts gets a successor; the old child drains only
// once the successor is ready; the recycle is counted.
func TestRecycleByAccepts(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.MaxAccepts = 10
	h := newHarness(t, cfg)
	h.readyAll(1)
	old := h.child(0, 1)
	inc(t, old, 12) // past any jitter: the limit is at most 11
	h.clock.Advance(recycleInterval)
	if got := len(h.procs.live()); got != 2 {
		t.Fatalf("%d live children after the limit, want the old one and its successor", got)
	}
	h.wantStates("0/1:ready", "0/1:starting")
	if got := h.procs.signalsOf(old.pid); len(got) != 0 {
		t.Fatalf("old child signalled %v before its successor was ready", got)
	}
	h.ready(h.newest(0))
	if got := h.procs.signalsOf(old.pid); !slices.Equal(got, []unix.Signal{unix.SIGTERM}) {
		t.Errorf("old child got %v, want SIGTERM", got)
	}
	h.wantStates("0/1:ready")
	snap, _ := h.s.Snapshot()
	if got := snap.Slots[0].Recycles[metrics.RecycleMaxAccepts]; got != 1 {
		t.Errorf("recycles = %v", snap.Slots[0].Recycles)
	}
	// The slot's count never goes down: the old child's accepts stay.
	if got := snap.Slots[0].Listeners[0].Count; got != 12 {
		t.Errorf("slot accepts = %d, want 12", got)
	}
	if got := h.logs.lines("child recycled"); len(got) != 1 || attr(got[0], "reason").String() != metrics.RecycleMaxAccepts {
		t.Errorf("recycled lines = %v", got)
	}
}

// A successor that fails leaves the old child serving, and recycling of
// the slot is held off for a while.
func TestRecycleSuccessorFails(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.MaxAccepts = 1 // checked at every tick
	h := newHarness(t, cfg)
	h.readyAll(1)
	old := h.child(0, 1)
	inc(t, old, 5)
	h.clock.Advance(recycleInterval)
	successor := h.newest(0)
	if successor == old {
		t.Fatal("no successor started past --max-accepts")
	}
	h.exit(successor, exitCode(1))
	h.wantStates("0/1:ready")
	if got := h.procs.signalsOf(old.pid); len(got) != 0 {
		t.Fatalf("old child signalled %v", got)
	}
	starts := len(h.procs.started())
	h.clock.Advance(minRecycleRetry - time.Millisecond)
	if got := len(h.procs.started()); got != starts {
		t.Errorf("recycling retried before %v", minRecycleRetry)
	}
	h.clock.Advance(recycleInterval)
	if got := len(h.procs.started()); got != starts+1 {
		t.Errorf("recycling not retried after the hold-off")
	}
	snap, _ := h.s.Snapshot()
	if got := snap.Slots[0].Restarts; got != 0 {
		t.Errorf("a failed successor counted as %d restarts of the slot", got)
	}
}

// Memory is read every rssEvery-th check only: a /proc read per child.
func TestRecycleByRSS(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.MaxRSS = 1 << 20
	h := newHarness(t, cfg)
	h.readyAll(1)
	old := h.child(0, 1)
	h.procs.mu.Lock()
	h.procs.rssOf[old.pid] = 2 << 20
	h.procs.mu.Unlock()
	h.clock.Advance((rssEvery - 1) * recycleInterval)
	if got := len(h.procs.started()); got != 1 {
		t.Fatalf("a successor started before the memory was read")
	}
	h.clock.Advance(recycleInterval)
	h.ready(h.newest(0))
	h.wantStates("0/1:ready")
	snap, _ := h.s.Snapshot()
	if got := snap.Slots[0].Recycles[metrics.RecycleMaxRSS]; got != 1 {
		t.Errorf("recycles = %v", snap.Slots[0].Recycles)
	}
}

// When the child being recycled dies first, its successor takes the slot
// at once, without a restart of its own.
func TestRecyclingChildDiesFirst(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.MaxAccepts = 1
	h := newHarness(t, cfg)
	h.readyAll(1)
	old := h.child(0, 1)
	inc(t, old, 5)
	h.clock.Advance(recycleInterval)
	successor := h.newest(0)
	h.exit(old, killedBy(unix.SIGKILL))
	starts := len(h.procs.started())
	h.clock.Advance(time.Second)
	if got := len(h.procs.started()); got != starts {
		t.Errorf("%d extra children started", got-starts)
	}
	h.ready(successor)
	h.wantStates("0/1:ready")
	h.onLoop(func() {
		if c := h.s.cur.slots[0].current; c == nil || c.pid != successor.pid {
			t.Errorf("the successor does not hold the slot")
		}
	})
}

// No recycling during a reload, and at most a quarter of the slots (at
// least one) recycle at once.
func TestRecycleLimits(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 8)
	cfg.MaxAccepts = 1
	h := newHarness(t, cfg)
	h.readyAll(1)
	for _, p := range h.procs.live() {
		inc(t, p, 5)
	}
	res := h.reloadAsync()
	h.clock.Advance(recycleInterval)
	if got := len(h.procs.started()); got != 16 {
		t.Fatalf("%d started during a reload, want 16 (no successor)", got)
	}
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	for _, p := range h.procs.live() {
		if p.generation() == 2 {
			inc(t, p, 5)
		}
	}
	h.clock.Advance(recycleInterval)
	if got := len(h.procs.started()); got != 18 {
		t.Errorf("%d started, want 18: two successors for 8 slots", got)
	}
}

// A child that pinged WATCHDOG=1 and went silent gets SIGQUIT, then
// SIGKILL after the grace, and is restarted; it is counted, not ready for
// /readyz, and its exit names the watchdog.
func TestWatchdogKillsHungChild(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Watchdog = time.Second
	h := newHarness(t, cfg)
	h.readyAll(1)
	p := h.child(0, 1)
	if p.env["WATCHDOG_USEC"] != "1000000" {
		t.Errorf("WATCHDOG_USEC = %q", p.env["WATCHDOG_USEC"])
	}
	p.ignore[unix.SIGQUIT] = true
	h.notify(p, notification{Watchdog: true})
	for range 3 {
		h.clock.Advance(900 * time.Millisecond)
		h.notify(p, notification{Watchdog: true})
	}
	if got := h.procs.signalsOf(p.pid); len(got) != 0 {
		t.Fatalf("a child that pings was signalled %v", got)
	}
	h.clock.Advance(time.Second)
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGQUIT}) {
		t.Fatalf("signals = %v, want SIGQUIT", got)
	}
	if why := h.s.whyNotReady(t.Context()); why != "no ready child in slot 0" {
		t.Errorf("readyz = %q", why)
	}
	h.wantStates("0/1:ready")
	h.clock.Advance(WatchdogGrace)
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGQUIT, unix.SIGKILL}) {
		t.Fatalf("signals = %v, want SIGQUIT then SIGKILL", got)
	}
	exits := h.logs.lines("child exited unexpectedly")
	if len(exits) != 1 || attr(exits[0], "reason").String() != "watchdog" {
		t.Errorf("exit lines = %v", exits)
	}
	snap, _ := h.s.Snapshot()
	if snap.Slots[0].WatchdogKills != 1 || snap.Slots[0].Restarts != 1 {
		t.Errorf("watchdog kills %d, restarts %d; want 1, 1", snap.Slots[0].WatchdogKills, snap.Slots[0].Restarts)
	}
	h.wantStates("0/1:starting")
}

// A watchdog check that comes long after it was due blames the master's
// own stall, once: the child gets a new period.
func TestWatchdogStallGrace(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Watchdog = time.Second
	h := newHarness(t, cfg)
	h.readyAll(1)
	p := h.child(0, 1)
	h.notify(p, notification{Watchdog: true})
	// The timer fires at 1 s, but the loop sees the event only 3 s
	// later: the master was stopped.
	stall := func() {
		var c *child
		h.onLoop(func() {
			c = h.s.children[p.pid]
			c.watchdogTimer.Stop()
		})
		h.clock.Advance(3 * time.Second)
		h.s.send(watchdogExpired{c: c})
		h.settle()
	}
	stall()
	if got := h.procs.signalsOf(p.pid); len(got) != 0 {
		t.Fatalf("killed for the master's stall: %v", got)
	}
	if n := h.logs.count("watchdog check came late"); n != 1 {
		t.Errorf("%d stall lines, want 1", n)
	}
	// Once in a row only: a second late check with no ping between
	// catches a child that hangs.
	stall()
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGQUIT}) {
		t.Errorf("signals = %v, want SIGQUIT at the second late check", got)
	}
}

// A hung child told to drain still gets its SIGKILL at the drain timeout
// when that comes before the end of its grace, and a stop cut that way
// says so.
func TestDrainOfHungChild(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Watchdog = time.Second
	cfg.DrainTimeout = time.Second
	h := newHarness(t, cfg)
	h.readyAll(1)
	p := h.child(0, 1)
	p.ignore[unix.SIGQUIT], p.ignore[unix.SIGTERM] = true, true
	h.notify(p, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.s.Stop(StopGraceful)
	h.settle()
	h.clock.Advance(time.Second)
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGQUIT, unix.SIGTERM, unix.SIGKILL}) {
		t.Errorf("signals = %v, want SIGQUIT, SIGTERM, then SIGKILL at the drain timeout", got)
	}
	if err := h.wait(); !errors.Is(err, ErrDrainCut) {
		t.Errorf("Run = %v, want ErrDrainCut", err)
	}
}

// The master pings its own watchdog from the loop, at half the period
// systemd gave it.
func TestMasterWatchdogPings(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1), underSystemd(2*time.Second))
	h.clock.Advance(3 * time.Second)
	pings := 0
	for _, s := range h.systemd.all() {
		if s == "WATCHDOG=1" {
			pings++
		}
	}
	if pings != 3 {
		t.Errorf("%d pings in 3 s with a 2 s watchdog, want 3", pings)
	}
}

// Scale up starts new slots at once; scale down drains the highest
// slots; the limits and a running reload refuse.
func TestScale(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	if r := h.s.Scale(4); r.Err != nil || r.Workers != 4 {
		t.Fatalf("Scale(4) = %+v", r)
	}
	h.wantStates("0/1:ready", "1/1:ready", "2/1:starting", "3/1:starting")
	if r := h.s.ScaleBy(-1); r.Err != nil || r.Workers != 3 {
		t.Fatalf("ScaleBy(-1) = %+v", r)
	}
	h.wantStates("0/1:ready", "1/1:ready", "2/1:starting")
	for _, n := range []int{0, MaxWorkers + 1} {
		if r := h.s.Scale(n); r.Err == nil || r.Workers != 3 {
			t.Errorf("Scale(%d) = %+v, want an error", n, r)
		}
	}
	res := h.reloadAsync()
	if r := h.s.Scale(5); !errors.Is(r.Err, ErrScaleBusy) {
		t.Errorf("Scale during a reload = %+v, want ErrScaleBusy", r)
	}
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatal(r.Err)
	}
	snap, _ := h.s.Snapshot()
	if len(snap.Slots) != 4 || snap.Workers != 3 {
		t.Errorf("snapshot: %d slots (want 4: every slot ever), %d workers (want 3)", len(snap.Slots), snap.Workers)
	}
}

// A slot scaled away while its restart is pending does not restart.
func TestScaleDownCancelsRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	h.exit(h.child(1, 1), exitCode(1))
	h.exit(h.child(1, 1), exitCode(1))
	var gone *slot
	h.onLoop(func() { gone = h.s.cur.slots[1] })
	if gone.restart == nil {
		t.Fatal("no restart pending after two crashes in a row")
	}
	if r := h.s.Scale(1); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.onLoop(func() {
		if gone.restart != nil {
			t.Errorf("scaling the slot away left its restart armed")
		}
	})
	starts := len(h.procs.started())
	h.clock.Advance(time.Second)
	if got := len(h.procs.started()); got != starts {
		t.Errorf("a scaled-away slot restarted")
	}
}

// Status and the metrics snapshot tell the children apart and keep the
// slots' totals across restarts.
func TestStatusAndSnapshot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	inc(t, h.child(0, 1), 3)
	h.clock.Advance(1500 * time.Millisecond)
	st := h.status()
	if st.Generation != 1 || st.Workers != 2 || st.Sockets != SocketsChild || len(st.Children) != 2 {
		t.Fatalf("status = %+v", st)
	}
	if c := st.Children[0]; c.Accepts != 3 || c.UptimeSeconds != 1.5 {
		t.Errorf("child 0: accepts %d, uptime %v; want 3, 1.5", c.Accepts, c.UptimeSeconds)
	}
	h.exit(h.child(0, 1), exitCode(1))
	inc(t, h.child(0, 1), 2)
	snap, _ := h.s.Snapshot()
	if snap.Slots[0].Listeners[0].Count != 5 || snap.Slots[0].Restarts != 1 {
		t.Errorf("slot 0: accepts %d, restarts %d; want 5, 1", snap.Slots[0].Listeners[0].Count, snap.Slots[0].Restarts)
	}
	if snap.Slots[1].PID != h.child(1, 1).pid || snap.Slots[0].PID != 0 {
		t.Errorf("PIDs of ready slots = %d, %d", snap.Slots[0].PID, snap.Slots[1].PID)
	}
	if len(snap.Children) != 2 {
		t.Errorf("%d children in the snapshot", len(snap.Children))
	}
	if why := h.s.whyNotReady(t.Context()); why != "no ready child in slot 0" {
		t.Errorf("readyz = %q", why)
	}
	h.ready(h.child(0, 1))
	if why := h.s.whyNotReady(t.Context()); why != "" {
		t.Errorf("readyz = %q, want ready", why)
	}
}
