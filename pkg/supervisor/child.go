package supervisor

import (
	"errors"
	"time"

	"github.com/prefork/prefork/pkg/counters"
	"golang.org/x/sys/unix"
)

// generation is one set of children started from one configuration.
type generation struct {
	number int
	cfg    Config
	argv   []string  // cfg.Command with its program resolved to a path
	id     *identity // who the children run as; nil: as the master
	slots  []*slot
}

// slot is a position 0..Workers-1 of a generation.
type slot struct {
	current  *child // nil while a restart is pending
	failures int    // unplanned exits in a row, for the backoff
	restart  timer  // a pending restart; nil when none
	// successor is the child starting to replace current (recycling);
	// current serves until it is ready. recycleReason says what limit
	// current passed.
	successor     *child
	recycleReason string
	// noRecycleBefore holds off recycling after a successor failed.
	noRecycleBefore time.Time
	// lastExit says how the slot's last child ended unplanned, and
	// retryAt when a pending restart is due: master status shows both.
	lastExit string
	retryAt  time.Time
	// note is the latest diagnosis of why the slot's children fail (a
	// program that does not share the address, one that ignores the
	// socket it was given); "" when there is none.
	note string
}

// cancelRestart stops the slot's pending restart, if any.
func (sl *slot) cancelRestart() {
	stopTimer(sl.restart)
	sl.restart = nil
}

// life is where a child is in its life. Every child is in exactly one;
// the moves are:
//
//	starting ──ready (READY=1, seen waiting, delay)──▶ ready ──a limit passed──▶ recycling ──successor ready──▶ draining
//	   │                    │  ◀──successor failed──────┘   │
//	   │                    └──watchdog missed──▶ hung ◀─────┘ (SIGQUIT, then SIGKILL)
//	   ├──watchdog missed (it pinged before READY=1)──▶ hung
//	   └──ready timeout──▶ late (SIGKILL)
//
// and any child not yet draining moves to draining when it is told to stop
// (Config.StopSignal). Exits are classified by the life they end (exit.go).
type life uint8

const (
	// lifeStarting: started, READY=1 not yet received.
	lifeStarting life = iota
	// lifeReady: said READY=1 and serves.
	lifeReady
	// lifeRecycling: ready, and passed a limit (--max-accepts,
	// --max-rss): its successor is starting beside it.
	lifeRecycling
	// lifeHung: pinged WATCHDOG=1, then went silent for the watchdog
	// period; sent SIGQUIT, SIGKILL follows after WatchdogGrace. A
	// READY=1 from it counts for nothing.
	lifeHung
	// lifeLate: not ready within the ready timeout; sent SIGKILL.
	lifeLate
	// lifeDraining: told to stop (Config.StopSignal); SIGKILL follows at
	// the drain timeout.
	lifeDraining
)

// state returns how Status and the metrics show c: a hung child shows
// what it was before it hung, a late one was still starting.
func (c *child) state() State {
	switch c.life {
	case lifeReady, lifeRecycling:
		return StateReady
	case lifeHung:
		if !c.readyAt.IsZero() {
			return StateReady
		}
	case lifeDraining:
		return StateDraining
	}
	return StateStarting
}

// serving reports whether a child in this life takes connections and is
// fit to: ready, recycling or not, and not hung.
func (l life) serving() bool { return l == lifeReady || l == lifeRecycling }

// child is one process the supervisor started and has not reaped yet.
type child struct {
	pid     int
	gen     *generation
	slot    int
	life    life
	started time.Time
	readyAt time.Time
	drainAt time.Time      // told to drain
	page    *counters.Page // its accept counter; nil if none could be made
	// acceptsSeen is the most its page ever showed, as the loop read it:
	// the child writes the page, and may write anything (see accepts).
	acceptsSeen uint64
	// countsSeen is, by listener of its generation, the most its page
	// ever showed for it (see counts).
	countsSeen []uint64

	// Its timers: the ready timeout while starting; the SIGKILL at the
	// drain timeout; the SIGKILL at the end of a watchdog's grace.
	readyTimer timer
	drainTimer timer
	graceTimer timer
	// delayTimer makes it ready under --ready delay:D.
	delayTimer timer
	// stopWatching ends the goroutine that watches the kernel for it
	// waiting on its socket; nil when none runs. seenWaiting is set once
	// that goroutine saw it.
	stopWatching func()
	seenWaiting  bool

	// The watchdog, armed by the child's first WATCHDOG=1.
	watchdogTimer timer
	lastPing      time.Time
	graced        bool   // the last expiry was excused as the master's stall
	acceptLimit   uint64 // recycle past this many accepts; 0: never
	killed        bool   // sent SIGKILL: it only waits to be reaped
}

// accepts returns the count of connections c accepted, as the master
// takes it: the highest value the loop ever read on its page. The child
// writes that page and can write anything, a smaller number or one about
// to wrap; taking the high-water mark keeps every total made of it from
// ever going down. Only the loop calls it.
func (c *child) accepts() uint64 {
	c.acceptsSeen = max(c.acceptsSeen, c.page.Accepts())
	return c.acceptsSeen
}

// counts returns, by listener of c's generation, the connections (TCP) or
// datagrams (UDP) c took on it, as the master takes them: high-water
// marks, like accepts. Accepts the page counts in its total but on no
// listener (a child built with the library before named listeners) go
// to the first TCP listener, so that the listeners add up to the total.
// The total is read first: the child counts an accept on its listener
// before the total (counters.Counter.Accept), so none of the total is
// missing from the listeners read after it, and none is taken for an
// accept without a listener. Only the loop calls it.
func (c *child) counts() []uint64 {
	ls := c.gen.cfg.Listen
	if len(c.countsSeen) < len(ls) {
		c.countsSeen = append(c.countsSeen, make([]uint64, len(ls)-len(c.countsSeen))...)
	}
	total := c.accepts()
	var onListeners uint64
	first := -1
	now := make([]uint64, len(ls))
	for i, l := range ls {
		now[i] = c.page.Listener(i)
		if l.Network == NetTCP {
			onListeners = addAccepts(onListeners, now[i])
			if first < 0 {
				first = i
			}
		}
	}
	if first >= 0 && total > onListeners {
		now[first] = addAccepts(now[first], total-onListeners)
	}
	for i := range ls {
		c.countsSeen[i] = max(c.countsSeen[i], now[i])
	}
	return c.countsSeen[:len(ls)]
}

// steerAccepts returns the connections c accepted on its generation's
// primary listener, the one steering watches (see counts); 0 when every
// listener is UDP. Only the loop calls it.
func (c *child) steerAccepts() uint64 {
	i := c.gen.cfg.Listen.primaryIndex()
	if i < 0 {
		return 0
	}
	return c.counts()[i]
}

// datagrams returns the datagrams c read on its UDP listeners, as counts
// takes them.
func (c *child) datagrams() uint64 {
	var n uint64
	for i, v := range c.counts() {
		if c.gen.cfg.Listen[i].Network == NetUDP {
			n = addAccepts(n, v)
		}
	}
	return n
}

// addAccepts returns a+b, or the largest uint64 where that would wrap: a
// child may write a count near 2^64 on its page, and a total that
// wrapped would go down.
func addAccepts(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// stopTimers stops every timer of c; it is gone or going.
func (c *child) stopTimers() {
	stopTimer(c.readyTimer)
	stopTimer(c.drainTimer)
	stopTimer(c.graceTimer)
	stopTimer(c.watchdogTimer)
	stopTimer(c.delayTimer)
	c.stopWatch()
}

// stopWatch ends the watch for c waiting on its socket, if one runs.
func (c *child) stopWatch() {
	if c.stopWatching != nil {
		c.stopWatching()
		c.stopWatching = nil
	}
}

// live reports whether c is still a process of the table (its pid may
// since have been reused by another child).
func (s *Supervisor) live(c *child) bool { return s.children[c.pid] == c }

// slotOf returns the slot c belongs to, or nil when a scale-down removed it.
func (s *Supervisor) slotOf(c *child) *slot {
	if c.slot < len(c.gen.slots) {
		return c.gen.slots[c.slot]
	}
	return nil
}

// allReady reports whether every slot of g has a ready child.
func allReady(g *generation) bool {
	for _, sl := range g.slots {
		if sl.current == nil || sl.current.state() != StateReady {
			return false
		}
	}
	return true
}

// childOf returns the child that pid is, or descends from: a child may
// hand the notify socket to a process of its own, as systemd's
// NotifyAccess=all allows.
func (s *Supervisor) childOf(pid int) *child {
	for range 8 {
		if c, ok := s.children[pid]; ok {
			return c
		}
		ppid, err := s.env.procs.parent(pid)
		if err != nil || ppid <= 1 {
			return nil
		}
		pid = ppid
	}
	return nil
}

// drain tells c to finish what it has and exit (--stop-signal), and arms the SIGKILL that
// follows at the drain timeout. A hung child keeps its grace's SIGKILL
// too: whichever comes first ends it.
func (s *Supervisor) drain(c *child) {
	if c.life == lifeDraining {
		return
	}
	c.life = lifeDraining
	c.drainAt = s.env.clock.Now()
	// Out of the steering program's array before it closes its
	// listener, and the master's copy closed, so that the listener's
	// queue moves to the others when it does.
	s.taken.drop(c.pid)
	stopTimer(c.readyTimer)
	stopTimer(c.watchdogTimer)
	stopTimer(c.delayTimer)
	c.stopWatch()
	s.kill(c, c.gen.cfg.StopSignal)
	s.armDrainTimer(c, c.gen.cfg.DrainTimeout)
}

// armDrainTimer arms the SIGKILL of a draining child, d from now.
func (s *Supervisor) armDrainTimer(c *child, d time.Duration) {
	c.drainTimer = s.env.clock.AfterFunc(d, func() { s.send(drainTimeout{c: c}) })
}

// kill signals c. Only the loop reaps, and it removes a child from the table
// as it does, so c.pid cannot name another process here. SIGKILL goes to
// the child's whole process group (it leads one of its own), as systemd's
// KillMode=control-group would: a helper the child started must not
// outlive it. Other signals go to the child alone; how it stops its
// helpers is its own business.
func (s *Supervisor) kill(c *child, sig unix.Signal) {
	if sig == unix.SIGKILL {
		c.killed = true
	}
	err := s.env.procs.signal(c.pid, sig, sig == unix.SIGKILL)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Error("could not signal a child", "pid", c.pid, "signal", unix.SignalName(sig), "err", err)
	}
}
