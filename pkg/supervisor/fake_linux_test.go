package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/proctree"
	"golang.org/x/sys/unix"
)

// The fake side of the seam (env.go): processes that exist only in a
// table, and a clock that moves when a test says so. The clock settles the
// loop after every timer it fires (settle runs a no-op through the loop,
// whose events are handled in order), and the harness settles after every
// exit it makes, so that a test reads a state in which every consequence
// has been handled.

// fakeClock is a clock that only Advance moves.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	tickers []*fakeTicker
	settle  func() // waits until the loop has handled what was sent
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), settle: func() {}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, when: c.now.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) NewTicker(d time.Duration) ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{clock: c, period: d, next: c.now.Add(d), ch: make(chan time.Time), stopped: make(chan struct{})}
	c.tickers = append(c.tickers, t)
	return t
}

// Advance moves the clock by d, firing every timer and tick due on the
// way in order, each at its own time, and settling the loop after each.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(end) {
		c.settle()
	}
	c.mu.Lock()
	c.now = end
	c.mu.Unlock()
}

// fireNext fires the earliest timer or tick due by end, and reports
// whether there was one.
func (c *fakeClock) fireNext(end time.Time) bool {
	c.mu.Lock()
	var timer *fakeTimer
	var tick *fakeTicker
	when := end.Add(time.Nanosecond)
	for _, t := range c.timers {
		if t.active && t.when.Before(when) {
			timer, when = t, t.when
		}
	}
	for _, t := range c.tickers {
		if !t.isStopped() && t.next.Before(when) {
			timer, tick, when = nil, t, t.next
		}
	}
	if timer == nil && tick == nil {
		c.mu.Unlock()
		return false
	}
	c.now = when
	if timer != nil {
		timer.active = false
		c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t == timer })
		c.mu.Unlock()
		timer.f()
		return true
	}
	tick.next = tick.next.Add(tick.period)
	c.mu.Unlock()
	// Unbuffered: the send returns once the loop took the tick, and the
	// settle after it waits for the loop to have acted on it.
	select {
	case tick.ch <- when:
	case <-tick.stopped:
	}
	return true
}

type fakeTimer struct {
	clock  *fakeClock
	when   time.Time
	f      func()
	active bool
}

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	was := t.active
	t.active = false
	c.timers = slices.DeleteFunc(c.timers, func(o *fakeTimer) bool { return o == t })
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	was := t.active
	t.when, t.active = c.now.Add(d), true
	if !was {
		c.timers = append(c.timers, t)
	}
	return was
}

type fakeTicker struct {
	clock   *fakeClock
	period  time.Duration
	next    time.Time
	ch      chan time.Time
	stopped chan struct{}
	once    sync.Once
}

func (t *fakeTicker) C() <-chan time.Time { return t.ch }
func (t *fakeTicker) Stop()               { t.once.Do(func() { close(t.stopped) }) }

func (t *fakeTicker) isStopped() bool {
	select {
	case <-t.stopped:
		return true
	default:
		return false
	}
}

// fakeProc is one process of fakeProcs.
type fakeProc struct {
	pid     int
	spec    spawnSpec
	env     map[string]string
	counter *counters.Counter // its counter page, mapped as a child would
	signals []unix.Signal
	// ignore lists the signals it does not exit on; by default it exits 0
	// on SIGTERM (a drain with nothing to finish), 2 on SIGQUIT (as Go
	// does) and is killed by SIGKILL.
	ignore map[unix.Signal]bool
	// lingers: SIGKILL does not end it until the test says (h.exit), as a
	// process whose exit the loop has not reaped yet.
	lingers bool
	exited  bool
}

func (p *fakeProc) slot() int       { n, _ := strconv.Atoi(p.env["PREFORK_SLOT"]); return n }
func (p *fakeProc) generation() int { n, _ := strconv.Atoi(p.env["PREFORK_GENERATION"]); return n }

// fakeProcs is procs without processes.
type fakeProcs struct {
	mu      sync.Mutex
	clock   *fakeClock
	nextPID int
	procs   []*fakeProc
	ended   []exitStatus
	exited  func()
	chld    bool // a SIGCHLD is queued and not reaped yet
	// failStart, when set, decides whether a start fails.
	failStart func(spec spawnSpec) error
	parents   map[int]int
	rssOf     map[int]uint64
	cpuOf     map[int]time.Duration // a child's cgroup CPU time; absent: no cgroup
	// releasedPIDs are the pids the loop released, in order.
	releasedPIDs []int
}

func newFakeProcs(clock *fakeClock) *fakeProcs {
	return &fakeProcs{clock: clock, nextPID: 1000, parents: make(map[int]int), rssOf: make(map[int]uint64),
		cpuOf: make(map[int]time.Duration)}
}

func (f *fakeProcs) run(exited func()) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exited = exited
	return func() {}
}

func (f *fakeProcs) start(spec spawnSpec) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failStart != nil {
		if err := f.failStart(spec); err != nil {
			return 0, err
		}
	}
	f.nextPID++
	p := &fakeProc{pid: f.nextPID, spec: spec, env: make(map[string]string), ignore: make(map[unix.Signal]bool)}
	for _, kv := range spec.env {
		k, v, _ := strings.Cut(kv, "=")
		p.env[k] = v
	}
	if n, err := strconv.Atoi(p.env["PREFORK_COUNTERS_FD"]); err == nil && n-3 < len(spec.extra) {
		// The child's own mapping of its page, from a copy of the fd
		// it would inherit.
		if fd, err := unix.Dup(spec.extra[n-3]); err == nil {
			if p.counter, err = counters.OpenCounter(fd); err != nil {
				unix.Close(fd)
			}
		}
	}
	f.procs = append(f.procs, p)
	return p.pid, nil
}

func (f *fakeProcs) signal(pid int, sig unix.Signal, group bool) error {
	f.mu.Lock()
	p := f.find(pid)
	if p == nil || p.exited {
		f.mu.Unlock()
		return unix.ESRCH
	}
	p.signals = append(p.signals, sig)
	var ws unix.WaitStatus
	switch {
	case p.ignore[sig] && sig != unix.SIGKILL, sig == unix.SIGKILL && p.lingers:
		f.mu.Unlock()
		return nil
	case sig == unix.SIGTERM:
		ws = exitCode(0)
	case sig == unix.SIGQUIT:
		ws = exitCode(2)
	default:
		ws = killedBy(sig)
	}
	f.mu.Unlock()
	// Called on the loop: the exit is queued, and the loop reaps it
	// after the handler that signalled returns.
	f.end(pid, ws)
	return nil
}

// end makes pid exit with ws.
func (f *fakeProcs) end(pid int, ws unix.WaitStatus) {
	f.mu.Lock()
	p := f.find(pid)
	if p != nil {
		p.exited = true
		if p.counter != nil {
			p.counter.Close()
		}
	}
	f.ended = append(f.ended, exitStatus{pid: pid, status: ws, at: f.clock.Now()})
	exited := f.exited
	if f.chld {
		exited = nil // one SIGCHLD stands for any number of exits
	} else {
		f.chld = exited != nil
	}
	f.mu.Unlock()
	if exited != nil {
		// Sent before end returns, so a settle after it sees the exit
		// handled. On the loop (a signal it sent) this goes into the
		// loop's own queue: only one SIGCHLD is ever queued, and the
		// tests keep far fewer than its 64 events in flight.
		exited()
	}
}

func (f *fakeProcs) reap(report func(exitStatus)) {
	for {
		f.mu.Lock()
		ended := f.ended
		f.ended = nil
		if len(ended) == 0 {
			// Cleared only now: a settle that sees it clear knows the
			// loop has handled every exit.
			f.chld = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		for _, e := range ended {
			report(e)
		}
	}
}

// sigchldQueued reports whether an exit waits to be reaped.
func (f *fakeProcs) sigchldQueued() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.chld
}

func (f *fakeProcs) parent(pid int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ppid, ok := f.parents[pid]; ok {
		return ppid, nil
	}
	return 0, unix.ESRCH
}

func (f *fakeProcs) cpu(pid int) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.cpuOf[pid]
	return d, ok
}

func (f *fakeProcs) rss(pid int) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.find(pid); p == nil || p.exited {
		return 0, unix.ESRCH
	}
	return f.rssOf[pid], nil
}

func (f *fakeProcs) find(pid int) *fakeProc {
	for _, p := range f.procs {
		if p.pid == pid {
			return p
		}
	}
	return nil
}

// live returns the processes that have not exited, in start order.
func (f *fakeProcs) live() []*fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*fakeProc
	for _, p := range f.procs {
		if !p.exited {
			out = append(out, p)
		}
	}
	return out
}

// started returns every process ever started, in start order.
func (f *fakeProcs) started() []*fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.procs)
}

func (f *fakeProcs) signalsOf(pid int) []unix.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.find(pid); p != nil {
		return slices.Clone(p.signals)
	}
	return nil
}

func exitCode(code int) unix.WaitStatus        { return unix.WaitStatus(code << 8) }
func killedBy(sig unix.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }

// release records the pids the loop released after reaping them.
func (f *fakeProcs) release(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releasedPIDs = append(f.releasedPIDs, pid)
}

func (f *fakeProcs) released() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.releasedPIDs)
}

// fakeObserver is observer without a kernel: a child is seen waiting when
// the test says so (seeWaiting), and the address probe answers what the
// test set.
type fakeObserver struct {
	mu      sync.Mutex
	seen    map[int]chan struct{} // by pid; closed once it is seen waiting
	watched map[int]waitSpec      // the watches asked for, by pid
	blocked bool                  // what addressInUse answers
	holders []int
	probes  int
	broken  error // what every watch fails with, if set
	// frozen counts, by pid, the freezes in force: freeze adds one to
	// each pid it is given, its thaw takes it back.
	frozen  map[int]int
	freezes int   // freezes asked for
	ever    []int // every pid frozen, in order
	// listeners are the sockets take finds, by pid (dup'ed for the
	// caller); takeErr, if set, is what take fails with instead.
	listeners map[int]int
	takeErr   error
	takes     int
	// takeFails is how many takes fail, before the others succeed, with
	// an error that may pass (no listener found yet).
	takeFails int
	// gate, if set, holds every freeze until it is closed.
	gate chan struct{}
}

func newFakeObserver() *fakeObserver {
	return &fakeObserver{seen: make(map[int]chan struct{}), watched: make(map[int]waitSpec), frozen: make(map[int]int)}
}

func (o *fakeObserver) chanOf(pid int) chan struct{} {
	ch, ok := o.seen[pid]
	if !ok {
		ch = make(chan struct{})
		o.seen[pid] = ch
	}
	return ch
}

func (o *fakeObserver) waiting(ctx context.Context, w waitSpec) error {
	o.mu.Lock()
	o.watched[w.pid] = w
	ch := o.chanOf(w.pid)
	broken := o.broken
	o.mu.Unlock()
	if broken != nil {
		return broken
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// seeWaiting makes pid waiting for connections from now on.
func (o *fakeObserver) seeWaiting(pid int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.chanOf(pid))
}

// watch returns the watch asked for pid, if any.
func (o *fakeObserver) watch(pid int) (waitSpec, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.watched[pid]
	return w, ok
}

func (o *fakeObserver) addressInUse(Listener) ([]int, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.probes++
	return slices.Clone(o.holders), o.blocked
}

// blockAddress makes the address probe find it held, by holders.
func (o *fakeObserver) blockAddress(holders ...int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.blocked, o.holders = true, holders
}

func (o *fakeObserver) freeze(_ context.Context, pids []int) (func() error, bool, error) {
	o.mu.Lock()
	gate := o.gate
	o.freezes++
	for _, pid := range pids {
		o.frozen[pid]++
	}
	o.ever = append(o.ever, pids...)
	o.mu.Unlock()
	if gate != nil {
		<-gate
	}
	var once sync.Once
	return func() error {
		once.Do(func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			for _, pid := range pids {
				o.frozen[pid]--
			}
		})
		return nil
	}, true, nil
}

// freezeState returns the freezes asked for and the pids frozen now.
func (o *fakeObserver) freezeState() (freezes int, now []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for pid, n := range o.frozen {
		if n > 0 {
			now = append(now, pid)
		}
	}
	return o.freezes, now
}

// frozenEver returns every pid frozen so far.
func (o *fakeObserver) frozenEver() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.ever)
}

func (o *fakeObserver) take(_ context.Context, pid int, _ string) (int, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.takes++
	if o.takeErr != nil {
		return -1, 0, o.takeErr
	}
	if o.takeFails > 0 {
		o.takeFails--
		return -1, 0, fmt.Errorf("fake: %w", proctree.ErrNoListener)
	}
	fd, ok := o.listeners[pid]
	if !ok {
		return -1, 0, fmt.Errorf("fake: no listener for pid %d", pid)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		unix.Close(dup)
		return -1, 0, err
	}
	return dup, st.Ino, nil
}

// listen makes fd the listener take finds for pid.
func (o *fakeObserver) listen(pid, fd int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.listeners == nil {
		o.listeners = make(map[int]int)
	}
	o.listeners[pid] = fd
}
