package supervisor

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// How a child becomes ready: by READY=1 in every mode (heard), by being
// seen waiting for connections under --ready listen (seenWaiting), by
// living through the delay of --ready delay:D (delayOver). Whichever comes
// first makes it ready (becameReady), and from there a reload, a restart's
// backoff, /readyz and steering treat every mode alike.

// Readiness events, sent by a child's watch goroutine and its delay timer.
type (
	// waitingSeen: the kernel shows c's processes waiting on its socket.
	waitingSeen struct{ c *child }
	// delayOver: c lived through --ready delay:D.
	delayOver struct{ c *child }
	// watchFailed: the kernel cannot be read for c's processes (a /proc
	// mounted with hidepid, say): --ready listen cannot see it ready.
	watchFailed struct {
		c   *child
		err error
	}
	// diagnosed: why a slot's child failed, found off the loop.
	diagnosed struct {
		g       *generation
		slot    *slot
		index   int
		addr    string // the listener's key
		holders []int  // the pids holding the address without sharing it
	}
)

// awaitReady arms what makes the new child c ready besides READY=1, and
// the watch behind the diagnoses: a child that never waits on the socket
// it was given cannot serve it, READY=1 or not; one that waits for
// connections but says nothing does not speak sd_notify.
func (s *Supervisor) awaitReady(c *child, fd int) {
	cfg := c.gen.cfg
	if cfg.Ready.Mode == ReadyDelay {
		c.delayTimer = s.env.clock.AfterFunc(cfg.Ready.Delay, func() { s.send(delayOver{c: c}) })
	}
	if cfg.Ready.Mode == ReadyDelay && cfg.Sockets != SocketsMaster {
		return
	}
	// Under notify too: a server that serves but never says READY=1 (the
	// common case) is then told apart, at the ready timeout, from one
	// that never got up.
	w := waitSpec{pid: c.pid, listen: cfg.Listen.first(), fd: -1}
	if cfg.Sockets == SocketsMaster {
		w.fd = fd
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopWatching = cancel
	go func() {
		switch err := s.env.observe.waiting(ctx, w); {
		case err == nil:
			s.send(waitingSeen{c: c})
		case ctx.Err() == nil:
			s.send(watchFailed{c: c, err: err})
		}
	}()
}

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
	if ev.msg.Ready {
		s.becameReady(c, ReadyNotify)
	}
}

// sawWaiting records that c waits on its socket; under --ready listen,
// that makes it ready.
func (s *Supervisor) sawWaiting(c *child) {
	if !s.live(c) {
		return
	}
	c.seenWaiting = true
	c.stopWatch() // its goroutine has ended
	if c.life != lifeStarting {
		// Ready already (READY=1): the ready timeout was kept armed
		// only to say whether it waits on its socket; it does.
		stopTimer(c.readyTimer)
		return
	}
	if c.gen.cfg.Ready.Mode == ReadyListen {
		s.becameReady(c, ReadyListen)
	}
}

// watchBroke says, once per child, that its processes cannot be watched.
func (s *Supervisor) watchBroke(ev watchFailed) {
	c := ev.c
	if !s.live(c) {
		return
	}
	c.stopWatching = nil // its goroutine has ended
	s.log.Warn("cannot watch a child's processes for connections", "slot", c.slot, "generation", c.gen.number,
		"pid", c.pid, "ready", c.gen.cfg.Ready.String(), "err", ev.err)
}

// delayEnded makes c ready under --ready delay:D.
func (s *Supervisor) delayEnded(c *child) {
	if s.live(c) {
		s.becameReady(c, ReadyDelay)
	}
}

// becameReady makes a starting child ready, by what says so.
func (s *Supervisor) becameReady(c *child, by string) {
	if c.life != lifeStarting {
		return // a READY=1 queued behind the ready timeout comes too late
	}
	c.life = lifeReady
	c.readyAt = s.env.clock.Now()
	stopTimer(c.delayTimer)
	if c.gen.cfg.Sockets != SocketsMaster || c.seenWaiting {
		stopTimer(c.readyTimer)
		c.stopWatch()
	} // else the ready timeout stays armed, for the diagnosis (readyTimedOut)
	s.log.Info("child ready", "slot", c.slot, "generation", c.gen.number, "pid", c.pid,
		"after_ms", millis(c.readyAt.Sub(c.started)), "by", by)
	if sl := s.slotOf(c); sl != nil && sl.current == c {
		sl.note = ""
	}
	s.steerReady(c)
	s.takeListener(c)
	if c.gen == s.cur {
		s.syncReservations() // its listener is bound: hold the address beside it
	}
	switch c.gen {
	case s.reload.next:
		if s.reload.roll != nil {
			s.rollFeed(rollInput{kind: rollReady, slot: c.slot, fresh: true})
			return
		}
		s.driveReload(reloadInput{kind: inNewReady})
	case s.cur:
		if s.restoring(c) {
			s.log.Info("slot back on the old configuration", "slot", c.slot, "generation", c.gen.number, "pid", c.pid)
			s.rollFeed(rollInput{kind: rollReady, slot: c.slot})
			return
		}
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

// logStalled is Options.LogStalled, or 0.
func (s *Supervisor) logStalled() time.Duration {
	if s.opts.LogStalled == nil {
		return 0
	}
	return s.opts.LogStalled()
}

// readyTimedOut kills a child that was not ready in time; its exit is a
// failed start. In master socket mode it also says when the child has not
// waited on the socket it was given, ready or not: such a program binds
// its own (or none), and what it was given queues connections nobody
// takes.
func (s *Supervisor) readyTimedOut(c *child) {
	if !s.live(c) {
		return
	}
	cfg := c.gen.cfg
	var hint string
	switch {
	case c.seenWaiting && c.life == lifeStarting && cfg.Ready.Mode == ReadyNotify:
		hint = "it waits for connections but sent no READY=1: it probably does not speak sd_notify; use --ready listen"
	case c.seenWaiting:
	case s.logStalled() >= time.Second:
		hint = fmt.Sprintf("the master's stderr has taken no line for %v, and the children's output goes there too: "+
			"a child that writes to it before it is ready blocks; see to whatever reads the master's stderr",
			s.logStalled().Round(time.Second))
	case cfg.Sockets == SocketsMaster:
		hint = "no process of it waits on fd 3, the socket it was given: it probably does not read LISTEN_FDS; " +
			"make it take fd 3 (socket activation), or use --sockets child"
	case cfg.Ready.Mode == ReadyListen:
		hint = fmt.Sprintf("no process of it listens on %s", cfg.Listen.first().key())
	}
	c.stopWatch()
	switch c.life {
	case lifeStarting:
		attrs := []any{"slot", c.slot, "generation", c.gen.number, "pid", c.pid,
			"ready_timeout_ms", millis(cfg.ReadyTimeout), "ready", cfg.Ready.String()}
		if hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		s.log.Error("child not ready in time; killing it", attrs...)
		c.life = lifeLate
		s.kill(c, unix.SIGKILL)
		if sl := s.slotOf(c); sl != nil && hint != "" {
			sl.note = hint
		}
	case lifeReady, lifeRecycling:
		sl := s.slotOf(c)
		if hint == "" || sl == nil || sl.note == hint {
			return // said once per slot, not at every restart
		}
		sl.note = hint
		s.log.Warn("ready child does not wait on the socket it was given", "slot", c.slot,
			"generation", c.gen.number, "pid", c.pid, "hint", hint)
	}
}
