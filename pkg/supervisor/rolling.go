package supervisor

import (
	"cmp"
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
	"golang.org/x/sys/unix"
)

// The loop's side of a rollout (rollout.go): it feeds the machine what the
// children do and performs its actions on real processes.

// rolloutRun is the running rollout and what the loop keeps for it.
type rolloutRun struct {
	*rollout
	strategy   string
	canaryFor  time.Duration
	watchUntil time.Time // the end of the canaries' watch, while it runs
	watchTimer timer
	// retries are the restoring slots waiting for their backoff, and
	// failures the times each failed to come back.
	retries  map[int]timer
	failures map[int]int
	// lastRestoreErr is why the last start of an old child failed.
	lastRestoreErr string
}

// Rollout events, tied to their rollout: one that ended ignores them.
type (
	canaryOver struct{ r *rolloutRun }
	restoreDue struct {
		r    *rolloutRun
		slot int
	}
)

// rolls reports whether a reload needs a rollout rather than a whole
// generation at once: a rolling strategy, or canaries.
func rolls(cfg Config) bool {
	return cfg.strategy() == StrategyRolling || cfg.Canary > 0
}

// cannotRoll says why a reload from cur to next cannot go slot by slot
// ("" when it can). A slot handed over to another address or socket mode
// would leave its old socket in the old group with nobody to accept (the
// master's own, in master mode) and steering judging it empty.
func cannotRoll(cur, next Config) string {
	switch {
	case !cur.Listen.sameSockets(next.Listen):
		return fmt.Sprintf("the addresses change (%s to %s)", cur.Listen, next.Listen)
	case cur.Sockets != next.Sockets:
		return fmt.Sprintf("the socket mode changes (%s to %s)", cur.Sockets, next.Sockets)
	case (cur.Steer != SteerOff || next.Steer != SteerOff) && cur.steerKey() != next.steerKey():
		// The checks judge the slots by the children of the serving
		// generation's first TCP listener: the new children, on
		// another, would look missing.
		return fmt.Sprintf("the first TCP listener, which steering watches, changes (%s to %s)", cur.Listen, next.Listen)
	}
	return ""
}

// beginRollout starts replacing the serving generation's slots with g's,
// by the rollout settings of cfg.
func (s *Supervisor) beginRollout(g *generation, cfg Config) {
	r := &rolloutRun{rollout: newRollout(len(s.cur.slots), len(g.slots), cfg), strategy: cfg.strategy(),
		canaryFor: cfg.CanaryFor, retries: make(map[int]timer), failures: make(map[int]int)}
	s.reload.roll = r
	attrs := []any{"generation", g.number, "strategy", r.strategy, "slots", r.n}
	if r.strategy == StrategyRolling {
		attrs = append(attrs, "max_surge", r.surge)
	}
	if r.canary > 0 {
		attrs = append(attrs, "canary", r.canary, "canary_for_ms", millis(r.canaryFor))
		if cfg.Canary > r.n {
			attrs = append(attrs, "canary_asked", cfg.Canary)
		}
	}
	s.log.Info("rollout started", attrs...)
}

// rollStep feeds in to the rollout and performs its actions, and those of
// the inputs they yield in turn (a start that fails at once). It returns
// the reload machine's input when the rollout ends: the caller feeds it.
func (s *Supervisor) rollStep(in rollInput) reloadInput {
	r := s.reload.roll
	if r == nil {
		return reloadInput{}
	}
	var out reloadInput
	queue := []rollInput{in}
	for len(queue) > 0 {
		in, queue = queue[0], queue[1:]
		for _, a := range r.step(in) {
			switch a.kind {
			case actCommitted:
				out = reloadInput{kind: inRolledOut}
			case actRolledBack:
				out = reloadInput{kind: inRolledBack}
			default:
				if next, ok := s.performRoll(r, a); ok {
					queue = append(queue, next)
				}
			}
		}
	}
	return out
}

// rollFeed is rollStep for an input from outside the reload machine's
// driver: it feeds the machine the rollout's end.
func (s *Supervisor) rollFeed(in rollInput) {
	if out := s.rollStep(in); out.kind != 0 {
		s.driveReload(out)
	}
}

// performRoll carries out one action of the rollout; a start that fails
// yields the input that says so.
func (s *Supervisor) performRoll(r *rolloutRun, a rollAction) (rollInput, bool) {
	next, i := s.reload.next, a.slot
	switch a.kind {
	case actStartNew:
		c, err := s.startChild(next, i)
		if err != nil {
			s.failRollout(fmt.Errorf("slot %d: %w", i, err))
			return rollInput{kind: rollFailed, slot: i, fresh: true}, true
		}
		next.slots[i].current = c
	case actDrainOld:
		if i >= len(s.cur.slots) {
			break // a slot the old generation did not have
		}
		// The serving generation drains from the first slot replaced
		// on; the cap counts it once, however often it is applied.
		s.capDraining(next.cfg.maxDraining())
		sl := s.cur.slots[i]
		sl.cancelRestart()
		for _, c := range []*child{sl.current, sl.successor} {
			if c != nil && s.live(c) {
				s.log.Info("slot replaced; its old child drains", "slot", i, "generation", c.gen.number,
					"pid", c.pid, "slots_done", r.done(), "slots", r.n)
				s.drain(c)
			}
		}
		// The slot's children are the new generation's now: the old
		// ones only wait to be reaped, and a recycle's successor is no
		// longer the heir should the slot go back and its child crash.
		sl.current, sl.successor, sl.recycleReason = nil, nil, ""
	case actWatch:
		r.watchUntil = s.env.clock.Now().Add(r.canaryFor)
		r.watchTimer = s.env.clock.AfterFunc(r.canaryFor, func() { s.send(canaryOver{r: r}) })
		s.log.Info("canaries replaced; watching them", "slots", r.canary, "for_ms", millis(r.canaryFor))
	case actStartOld:
		return s.restoreSlot(r, i)
	case actRetryOld:
		return s.retryRestore(r, i)
	case actAdopt:
		s.adopt(r, i)
	case actDrainNew:
		if i < len(next.slots) {
			if c := next.slots[i].current; c != nil && s.live(c) {
				s.drain(c)
			}
		}
	}
	return rollInput{}, false
}

// restoreSlot starts a child of the serving generation's configuration in
// slot i again, beside the new child that replaced its old one; a start
// that fails is retried (retryRestore).
func (s *Supervisor) restoreSlot(r *rolloutRun, i int) (rollInput, bool) {
	delete(r.retries, i)
	c, err := s.startChild(s.cur, i)
	if err != nil {
		r.lastRestoreErr = err.Error()
		s.log.Error("could not start the old configuration's child again", "slot", i, "generation", s.cur.number, "err", err)
		return s.retryRestore(r, i)
	}
	s.cur.slots[i].current = c
	return rollInput{}, false
}

// maxRestoreTries is how many times a slot's old child may fail to come
// back before the slot keeps its new child: a rollback whose old
// configuration no longer starts (its binary gone) must end, or no
// reload could ever fix it.
const maxRestoreTries = 5

// retryRestore starts slot i's old child again after the backoff; the new
// child serves the slot meanwhile. Past maxRestoreTries it yields the
// input that gives up.
func (s *Supervisor) retryRestore(r *rolloutRun, i int) (rollInput, bool) {
	r.failures[i]++
	if r.failures[i] >= maxRestoreTries {
		return rollInput{kind: rollGiveUp, slot: i}, true
	}
	d := max(minRecycleRetry, restartDelay(r.failures[i]))
	s.log.Warn("the old configuration's child did not come back; trying again", "slot", i,
		"generation", s.cur.number, "in_ms", millis(d), "failures_in_a_row", r.failures[i])
	r.retries[i] = s.env.clock.AfterFunc(d, func() { s.send(restoreDue{r: r, slot: i}) })
	return rollInput{}, false
}

// adopt gives up on bringing slot i back: its new child, if it still
// serves, stays and joins the serving generation (a crash then restarts
// the slot with the old configuration, under the backoff); if it is gone
// too, the slot restarts under the backoff now.
func (s *Supervisor) adopt(r *rolloutRun, i int) {
	sl := s.cur.slots[i]
	why := fmt.Sprintf("the old configuration's child of slot %d failed to start %d times", i, r.failures[i])
	if r.lastRestoreErr != "" {
		why += " (last: " + r.lastRestoreErr + ")"
	}
	c := s.reload.next.slots[i].current
	if c == nil || !s.live(c) || !c.life.serving() {
		s.log.Error("giving up on the slot's old configuration; the slot restarts under the backoff", "slot", i, "reason", why)
		sl.failures = max(sl.failures, r.failures[i])
		if sl.current != nil && sl.current.life == lifeDraining {
			sl.current = nil // its old child, drained when the slot was replaced
		}
		s.scheduleRestart(s.cur, i)
		s.reload.err = fmt.Errorf("%w; %s, and restarts under the backoff", s.reload.err, why)
		return
	}
	s.reload.next.slots[i].current = nil
	c.gen = s.cur
	sl.current = c
	s.log.Error("giving up on the slot's old configuration; it keeps its new child", "slot", i, "pid", c.pid, "reason", why)
	s.reload.err = fmt.Errorf("%w; %s, so it keeps its new child (pid %d)", s.reload.err, why, c.pid)
}

// restoreDueNow restarts a slot's old child whose backoff is over.
func (s *Supervisor) restoreDueNow(ev restoreDue) {
	if s.reload.roll != ev.r || ev.r.phase != rollBack || ev.r.slots[ev.slot] != slotRestoring {
		return
	}
	if in, ok := s.restoreSlot(ev.r, ev.slot); ok {
		s.rollFeed(in)
	}
}

// canaryWatched goes on with a rollout whose canaries lived through their
// watch.
func (s *Supervisor) canaryWatched(ev canaryOver) {
	r := ev.r
	if s.reload.roll != r || r.phase != rollWatching {
		return
	}
	r.watchUntil = time.Time{}
	if r.done() == r.n {
		s.log.Info("canaries passed their watch; every slot is replaced", "slots", r.n)
	} else {
		s.log.Info("canaries passed their watch; replacing the rest", "slots_done", r.done(), "slots", r.n)
	}
	s.rollFeed(rollInput{kind: rollWatchOver})
}

// failRollout keeps the first reason a rollout turns back for.
func (s *Supervisor) failRollout(err error) {
	if s.reload.err == nil {
		s.reload.err = err
	}
	if r := s.reload.roll; r != nil && r.phase != rollBack && r.phase != rollDone {
		s.log.Error("rollout failed; the replaced slots go back to the old configuration", "err", err,
			"slots_done", r.done(), "slots", r.n)
	}
}

// newChildFailed turns a rollout back for c, a child of the new
// generation that failed: it exited, or (with canaries watched) missed
// its watchdog or got stuck.
func (s *Supervisor) newChildFailed(c *child, reason string) {
	if r := s.reload.roll; r != nil && r.phase == rollWatching {
		reason = fmt.Sprintf("a canary, %v into its %v watch: %s",
			(r.canaryFor - r.watchUntil.Sub(s.env.clock.Now())).Round(time.Millisecond), r.canaryFor, reason)
	}
	s.failRollout(fmt.Errorf("slot %d pid %d: %s", c.slot, c.pid, reason))
	s.rollFeed(rollInput{kind: rollFailed, slot: c.slot, fresh: true})
}

// restoring reports whether c is the child starting to take its slot back
// from the new generation.
func (s *Supervisor) restoring(c *child) bool {
	r := s.reload.roll
	return r != nil && c.gen == s.cur && c.slot < r.n && r.slots[c.slot] == slotRestoring &&
		c.slot < len(s.cur.slots) && s.cur.slots[c.slot].current == c
}

// handedOver reports whether slot i of the serving generation belongs to
// the new one for now: its old child drains and it must not restart.
func (s *Supervisor) handedOver(i int) bool {
	r := s.reload.roll
	return r != nil && r.handedOver(i)
}

// servingChild returns the child that serves slot i, whatever its
// generation: the new one's in a slot a rollout has replaced.
func (s *Supervisor) servingChild(i int) *child {
	if r := s.reload.roll; r != nil && i < r.n {
		switch c := s.reload.next.slots[i].current; {
		case r.slots[i] == slotNew:
			return c
		case r.slots[i] == slotRestoring && c != nil && c.life.serving():
			return c // until the old one is back
		}
	}
	if i < len(s.cur.slots) {
		return s.cur.slots[i].current
	}
	return nil
}

// endRollout forgets the rollout and stops its timers.
func (s *Supervisor) endRollout() {
	r := s.reload.roll
	if r == nil {
		return
	}
	stopTimer(r.watchTimer)
	for _, t := range r.retries {
		stopTimer(t)
	}
	s.reload.roll = nil
}

// capDraining kills the oldest draining generations when a reload would
// leave more than --max-draining-generations draining at once: the
// serving one will drain too (or, rolled back, the new one). A
// generation is told apart by itself, not its number (one rolled back
// had the number the next reload gives again); the oldest is the one
// that began draining first.
func (s *Supervisor) capDraining(limit int) {
	since := map[*generation]time.Time{} // the first of its children told to drain
	for _, c := range s.children {
		if c.life != lifeDraining || c.gen == s.cur || c.killed {
			continue
		}
		if t, ok := since[c.gen]; !ok || c.drainAt.Before(t) {
			since[c.gen] = c.drainAt
		}
	}
	for len(since)+1 > limit {
		var oldest *generation
		for g, t := range since {
			if oldest == nil || t.Before(since[oldest]) || t.Equal(since[oldest]) && g.number < oldest.number {
				oldest = g
			}
		}
		delete(since, oldest)
		killed := 0
		for _, c := range s.children {
			if c.life == lifeDraining && c.gen == oldest && !c.killed {
				s.kill(c, unix.SIGKILL)
				killed++
			}
		}
		s.tally.drainKilled += uint64(killed)
		s.log.Warn("killing the oldest draining generation: the reload would leave more generations draining than --max-draining-generations",
			"generation", oldest.number, "children", killed, "max_draining_generations", limit)
	}
}

// reloadKey is the series of prefork_reloads_total a reload's outcome
// counts in.
func reloadKey(result, strategy string) metrics.ReloadKey {
	return metrics.ReloadKey{Result: result, Strategy: cmp.Or(strategy, StrategyGeneration)}
}

// canaryUnhealthy fails a watched canary whose slot steering found
// stuck or without a ready child: readiness lost.
func (s *Supervisor) canaryUnhealthy(i int, why string) {
	r := s.reload.roll
	if r == nil || r.phase != rollWatching || i >= r.n || r.slots[i] != slotNew {
		return
	}
	if c := s.reload.next.slots[i].current; c != nil {
		s.newChildFailed(c, "lost its readiness while watched: "+why)
	}
}
