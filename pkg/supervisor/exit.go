package supervisor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An exit is where a crash is noticed: the loop reaps (sigchld), and each
// exit is first classified by the life it ends, then dispatched.

// exitKind is what an exit means to the supervisor.
type exitKind uint8

const (
	// exitPlanned: the child was draining, or the master is stopping.
	exitPlanned exitKind = iota + 1
	// exitSuccessor: a recycling successor that never got ready; the
	// child it was to replace serves on.
	exitSuccessor
	// exitNewGeneration: a child of the generation a reload is starting;
	// the reload rolls back.
	exitNewGeneration
	// exitRestore: a child of the serving generation that was starting
	// to take its slot back from a rollout that failed; another follows
	// after the backoff.
	exitRestore
	// exitServing: a child of the serving generation; its slot restarts.
	exitServing
	// exitStray: a child of a generation neither serving nor starting
	// that was not draining; nothing follows.
	exitStray
)

// classify says what the exit of c, still in the table, means.
func (s *Supervisor) classify(c *child) exitKind {
	sl := s.slotOf(c)
	switch {
	case c.life == lifeDraining || s.stopping != 0:
		return exitPlanned
	case sl != nil && sl.successor == c:
		return exitSuccessor
	case c.gen == s.reload.next:
		return exitNewGeneration
	case s.restoring(c):
		return exitRestore
	case c.gen == s.cur && sl != nil:
		return exitServing
	}
	return exitStray
}

// exited handles one process the loop reaped.
func (s *Supervisor) exited(e exitStatus) {
	c, ok := s.children[e.pid]
	if !ok {
		// An orphan the kernel re-parented to us (we are PID 1 or a
		// subreaper): reaping it is all there is to do.
		s.log.Debug("reaped a process outside the group", "pid", e.pid)
		return
	}
	kind := s.classify(c)
	s.forget(c)
	// Nothing of a child outlives it: its workers, a daemon it forked.
	s.env.procs.release(c.pid)
	attrs := append([]any{"slot", c.slot, "generation", c.gen.number, "pid", c.pid,
		"lived_ms", millis(e.at.Sub(c.started))}, exitAttrs(e.status)...)
	if kind == exitPlanned {
		s.log.Info("child exited", attrs...)
		return
	}
	reason := describeExit(e.status)
	switch c.life {
	case lifeLate:
		attrs = append(attrs, "reason", "not ready in time")
		reason = fmt.Sprintf("not ready within %v", c.gen.cfg.ReadyTimeout)
	case lifeHung:
		attrs = append(attrs, "reason", "watchdog")
		reason = fmt.Sprintf("killed by the watchdog: no WATCHDOG=1 for %v (%s)", c.gen.cfg.Watchdog, reason)
	}
	s.log.Warn("child exited unexpectedly", attrs...)
	s.diagnoseExit(c)
	switch kind {
	case exitSuccessor:
		s.successorFailed(s.slotOf(c), c, reason)
	case exitNewGeneration:
		if sl := s.slotOf(c); sl != nil && sl.note != "" {
			reason += ": " + sl.note // what `master reload` prints
		}
		if s.reload.roll != nil {
			s.newChildFailed(c, reason)
			return
		}
		s.reload.err = fmt.Errorf("slot %d pid %d: %s", c.slot, c.pid, reason)
		s.driveReload(reloadInput{kind: inNewFailed})
	case exitRestore:
		s.log.Error("the old configuration's child failed before it was ready", "slot", c.slot, "pid", c.pid, "reason", reason)
		s.rollFeed(rollInput{kind: rollFailed, slot: c.slot})
	case exitServing:
		s.crashed(c, reason, e)
	}
}

// forget removes c from the table and from its slot, and folds its count
// (the most it ever showed) into the slot's total before its page goes, so
// that the slot's counter never goes down.
func (s *Supervisor) forget(c *child) {
	delete(s.children, c.pid)
	s.gate.remove(c.pid)
	s.taken.drop(c.pid) // its listener closes now, and its queue moves
	s.tally.accepted[c.slot] = addAccepts(s.tally.accepted[c.slot], c.accepts())
	s.steering.gone[c.slot] = addAccepts(s.steering.gone[c.slot], c.steerAccepts())
	for i, n := range c.counts() {
		k := countKeyOf(c.slot, c.gen.cfg.Listen[i])
		s.tally.counted[k] = addAccepts(s.tally.counted[k], n)
	}
	c.page.Close()
	c.stopTimers()
	if sl := s.slotOf(c); sl != nil {
		if sl.successor == c {
			sl.successor, sl.recycleReason = nil, ""
		}
		if sl.current == c {
			sl.current = nil
		}
	}
}

// crashed restarts the slot of a serving child that exited unplanned: at
// once, or after the backoff if its exit counts as a failure (judgeExit).
func (s *Supervisor) crashed(c *child, reason string, e exitStatus) {
	sl := s.slotOf(c)
	at := e.at
	s.steerAfterCrash(c)
	sl.failures = failuresAfterExit(sl.failures, exitFactsOf(c, e))
	sl.lastExit = fmt.Sprintf("%s after %v", reason, at.Sub(c.started).Round(time.Millisecond))
	s.tally.restarts[c.slot]++
	if sl.successor != nil {
		// The child being recycled died first: its successor, already
		// starting, takes the slot.
		sl.current, sl.successor, sl.recycleReason = sl.successor, nil, ""
		return
	}
	s.scheduleRestart(c.gen, c.slot)
}

// exitFactsOf is what the backoff needs to know of c's exit e; forget
// has taken c's last count.
func exitFactsOf(c *child, e exitStatus) exitFacts {
	f := exitFacts{status: e.status, ready: !c.readyAt.IsZero(), served: c.acceptsSeen > 0, hung: c.life == lifeHung}
	if f.ready {
		f.readyFor = e.at.Sub(c.readyAt)
	}
	return f
}

// exitAttrs are the log attributes of how a process ended.
func exitAttrs(ws unix.WaitStatus) []any {
	switch {
	case ws.Exited():
		return []any{"code", ws.ExitStatus()}
	case ws.Signaled():
		return []any{"signal", unix.SignalName(ws.Signal())}
	}
	return []any{"status", int(ws)}
}

// describeExit says how a process ended, for a reload's reason.
func describeExit(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with code %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("ended with status %#x", int(ws))
}

// scheduleRestart restarts slot slotIndex of g after its backoff.
func (s *Supervisor) scheduleRestart(g *generation, slotIndex int) {
	if s.stopping != 0 {
		return
	}
	sl := g.slots[slotIndex]
	delay := restartDelay(sl.failures)
	s.log.Info("restarting slot", "slot", slotIndex, "generation", g.number, "in_ms", millis(delay),
		"failures_in_a_row", sl.failures)
	if delay == 0 {
		s.startServing(slotIndex)
		return
	}
	sl.cancelRestart()
	sl.retryAt = s.env.clock.Now().Add(delay)
	sl.restart = s.env.clock.AfterFunc(delay, func() { s.send(restartDue{s: sl}) })
}

// restartDue restarts a slot whose backoff is over, unless the slot
// has a child again or belongs to a generation no longer serving.
func (s *Supervisor) restartDue(sl *slot) {
	sl.restart, sl.retryAt = nil, time.Time{}
	if s.stopping != 0 || sl.current != nil {
		return
	}
	if i := slices.Index(s.cur.slots, sl); i >= 0 && s.handedOver(i) {
		return // a rollout gave the slot to the new generation
	}
	// Only the serving generation restarts; a slot of a generation that
	// was replaced meanwhile has no business starting anything.
	for i, cur := range s.cur.slots {
		if cur == sl {
			s.startServing(i)
		}
	}
}

// diagnoseExit looks, off the loop, for why a child of child socket mode
// exited before it was ready: a program that binds without SO_REUSEPORT
// gets "address already in use" in every slot but the first, and would
// crash-loop there in silence. The answer comes back as diagnosed.
//
// The probe binds as the master: children of another user (--user) could
// not share with it even when they set SO_REUSEPORT (the kernel shares a
// port between sockets of one owner), so it is not made for them.
func (s *Supervisor) diagnoseExit(c *child) {
	sl := s.slotOf(c)
	if c.life != lifeStarting || sl == nil {
		return
	}
	if c.gen.cfg.Sockets == SocketsMaster {
		s.exitedUnwaiting(c, sl)
		return
	}
	if c.gen.id != nil {
		return
	}
	d := diagnosed{g: c.gen, slot: sl, index: c.slot}
	listen := c.gen.cfg.Listen
	go func() {
		for _, l := range listen {
			var blocked bool
			if d.holders, blocked = s.env.observe.addressInUse(l); blocked {
				d.addr = l.key()
				s.send(d)
				return
			}
		}
	}()
}

// exitedUnwaiting says, once per slot, why a master-mode child may have
// exited before it was ready without ever waiting on the socket it was
// given: a server that binds the address itself instead of taking fd 3
// fails with "address already in use", since the master holds it. The
// master cannot read the child's own words (its stderr is not the
// master's to read), so the hint says what to look for.
func (s *Supervisor) exitedUnwaiting(c *child, sl *slot) {
	if c.seenWaiting {
		return
	}
	note := fmt.Sprintf("it exited before it waited on fd 3, the socket it was given; if it said \"address already in use\", "+
		"it binds %s itself: make it take fd 3 (LISTEN_FDS; nginx: NGINX=\"3;\", uvicorn: --fd 3) or use --sockets child", c.gen.cfg.Listen.first().key())
	if sl.note == note {
		return
	}
	sl.note = note
	s.log.Error("child exited before it took its socket", "slot", c.slot, "generation", c.gen.number, "pid", c.pid, "hint", note)
}

// diagnose says why a slot's children cannot bind its address, once per
// slot and cause, and keeps it for master status. A slot that is gone (a
// reload rolled back, a scale-down) still gets its line.
func (s *Supervisor) diagnose(d diagnosed) {
	addr := d.addr
	var ours, others []string
	for _, pid := range d.holders {
		if c := s.childOf(pid); c != nil {
			ours = append(ours, fmt.Sprintf("slot %d (pid %d)", c.slot, pid))
		} else {
			others = append(others, strconv.Itoa(pid))
		}
	}
	var note string
	switch {
	case len(ours) > 0:
		note = fmt.Sprintf("address already in use: %s holds %s without SO_REUSEPORT, so the program probably does not set it; "+
			"use --sockets master (the program must then take fd 3)", strings.Join(ours, ", "), addr)
	case len(others) > 0:
		note = fmt.Sprintf("address already in use: %s is held by another program (pid %s), not by a child of this master",
			addr, strings.Join(others, ", "))
	default:
		// The holder is out of sight (another user's, or gone since).
		note = fmt.Sprintf("address already in use: %s is held by a socket that does not share it (SO_REUSEPORT)", addr)
	}
	live := slices.Contains(s.cur.slots, d.slot) || s.reload.next != nil && slices.Contains(s.reload.next.slots, d.slot)
	if d.slot.note == note {
		// A crash loop says it once.
		s.log.Debug("slot cannot bind its address, again", "slot", d.index, "generation", d.g.number)
		return
	}
	if live {
		d.slot.note = note
	}
	s.log.Error("slot cannot bind its address", "slot", d.index, "generation", d.g.number, "hint", note)
}

// millis is d in milliseconds, to the microsecond: a number in JSON logs.
func millis(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Millisecond)
}
