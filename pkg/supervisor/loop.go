package supervisor

import (
	"context"
	"time"
)

// The events the loop receives. Timer events carry the child or slot they
// were armed for; the loop ignores one whose child is gone.
type (
	// sigchld: some process of ours may have ended; the loop reaps.
	sigchld struct{}
	// notified: an sd_notify datagram, with its sender's pid as the
	// kernel stamped it, read at at.
	notified struct {
		pid int
		msg notification
		at  time.Time
	}
	readyTimeout      struct{ c *child }
	drainTimeout      struct{ c *child }
	watchdogExpired   struct{ c *child }
	watchdogGraceOver struct{ c *child }
	restartDue        struct{ s *slot }
	stopRequest       struct{ mode StopMode }
	// configLoaded: the reload's read of its configuration returned,
	// with the next generation made of it, or why not.
	configLoaded struct {
		seq  uint64
		next *generation
		kept []string
		err  error
	}
	// configReadTimeout: the read seq passed its deadline.
	configReadTimeout struct{ seq uint64 }
	// call runs a request of the public API on the loop (api.go).
	call func()
)

// loop is the event loop: it owns the children table and everything the
// Supervisor's "owned by the loop" fields hold, and runs until a stop has
// reaped every child.
func (s *Supervisor) loop(ctx context.Context) {
	done := ctx.Done()
	// The master's own watchdog, when systemd gave it one (WatchdogSec=):
	// pinged from the loop, so a loop that hangs stops the pings.
	var ping <-chan time.Time
	if d := s.env.watchdog; d > 0 && s.env.notifySystemd != nil {
		t := s.env.clock.NewTicker(d / 2)
		defer t.Stop()
		ping = t.C()
	}
	defer s.recycleChecks.set(s.env.clock, false)
	defer s.steering.setTicker(s.env.clock, false)
	for s.stopping == 0 || len(s.children) > 0 {
		recycleTick := s.recycleChecks.set(s.env.clock, s.stopping == 0 && (s.cur.cfg.MaxAccepts > 0 || s.cur.cfg.MaxRSS > 0))
		steerTick := s.steering.setTicker(s.env.clock, s.steeringActive())
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-recycleTick:
			s.checkRecycling()
		case <-steerTick:
			s.steerTick()
		case <-ping:
			s.notifySystemd("WATCHDOG=1")
		case <-done:
			done = nil
			s.stop(StopGraceful)
		}
	}
}

// handle dispatches one event to the function that owns its decision.
func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case sigchld:
		s.env.procs.reap(s.exited)
	case notified:
		s.heard(ev)
	case readyTimeout:
		s.readyTimedOut(ev.c)
	case drainTimeout:
		s.drainTimedOut(ev.c)
	case watchdogExpired:
		s.watchdogExpired(ev.c)
	case watchdogGraceOver:
		s.watchdogGraceOver(ev.c)
	case restartDue:
		s.restartDue(ev.s)
	case stopRequest:
		s.stop(ev.mode)
	case configLoaded:
		s.configLoaded(ev)
	case configReadTimeout:
		s.configReadTimedOut(ev.seq)
	case waitingSeen:
		s.sawWaiting(ev.c)
	case delayOver:
		s.delayEnded(ev.c)
	case watchFailed:
		s.watchBroke(ev)
	case diagnosed:
		s.diagnose(ev)
	case frozen:
		s.rescueFrozen(ev)
	case took:
		s.tookListener(ev)
	case retake:
		s.retook(ev)
	case upgradeChecked:
		s.upgradeCheckDone(ev)
	case upgradeRetry:
		s.upgradeWhenQuiet()
	case canaryOver:
		s.canaryWatched(ev)
	case restoreDue:
		s.restoreDueNow(ev)
	case call:
		ev()
	}
}

// send delivers an event to the loop, or drops it once the loop is gone.
func (s *Supervisor) send(ev any) {
	select {
	case s.events <- ev:
	case <-s.quit:
	}
}
