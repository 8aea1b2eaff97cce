package supervisor

import "golang.org/x/sys/unix"

// heard acts on an sd_notify datagram: READY=1 makes a starting child
// ready, WATCHDOG=1 feeds its watchdog.
func (s *Supervisor) heard(ev notified) {
	c := s.childOf(ev.pid)
	if c == nil {
		s.log.Debug("notify message from a process outside the group", "pid", ev.pid)
		return
	}
	if ev.msg.Watchdog {
		s.watchdogPing(c, ev.at)
	}
	if !ev.msg.Ready || c.life != lifeStarting {
		return // a READY=1 queued behind the ready timeout comes too late
	}
	c.life = lifeReady
	c.readyAt = s.env.clock.Now()
	stopTimer(c.readyTimer)
	s.log.Info("child ready", "slot", c.slot, "generation", c.gen.number, "pid", c.pid,
		"after_ms", millis(c.readyAt.Sub(c.started)))
	switch c.gen {
	case s.reload.next:
		s.driveReload(reloadInput{kind: inNewReady})
	case s.cur:
		if sl := s.slotOf(c); sl != nil && sl.successor == c {
			s.recycled(sl)
			return
		}
		if !s.announced && s.reload.idle() && allReady(s.cur) {
			s.announced = true
			s.notifySystemd("READY=1")
		}
	}
}

// readyTimedOut kills a child that did not say READY=1 in time; its exit
// is a failed start.
func (s *Supervisor) readyTimedOut(c *child) {
	if !s.live(c) || c.life != lifeStarting {
		return
	}
	s.log.Error("child not ready in time; killing it", "slot", c.slot, "generation", c.gen.number,
		"pid", c.pid, "ready_timeout_ms", millis(c.gen.cfg.ReadyTimeout))
	c.life = lifeLate
	s.kill(c, unix.SIGKILL)
}
