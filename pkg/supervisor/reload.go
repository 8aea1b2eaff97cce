package supervisor

import (
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// The loop's side of a reload: it feeds the state machine
// (reloadmachine.go) and performs its actions on real processes.

// ReloadResult is the outcome of a reload: the generation serving after it,
// and why it failed, wrapping ErrReloadRejected, ErrRolledBack or
// ErrStopping.
type ReloadResult struct {
	Generation int
	Err        error
}

// reloadRun is the reload in progress and the callers waiting on it.
type reloadRun struct {
	machine reloadMachine
	next    *generation // the generation a reload is starting, or nil
	started time.Time
	err     error                 // why the running reload failed
	outcome ReloadResult          // of the reload that just ended, for actAnswer
	waiters []chan<- ReloadResult // callers of the running reload
	later   []chan<- ReloadResult // callers of the coalesced reload after it
}

func (r *reloadRun) idle() bool { return r.machine.phase == reloadIdle }

// requestReload asks for a reload; reply, if not nil, gets its outcome.
func (s *Supervisor) requestReload(reply chan<- ReloadResult) {
	if s.stopping != 0 {
		if reply != nil {
			reply <- ReloadResult{Generation: s.cur.number, Err: ErrStopping}
		}
		return
	}
	running := !s.reload.idle()
	if reply != nil {
		if running {
			s.reload.later = append(s.reload.later, reply)
		} else {
			s.reload.waiters = append(s.reload.waiters, reply)
		}
	}
	s.log.Info("reload requested", "running_already", running)
	s.driveReload(reloadInput{kind: inRequest})
}

// driveReload feeds in to the state machine and performs the actions it
// returns; an action that yields an input (starting a generation) has it
// fed in turn, until the machine waits for the outside world again.
func (s *Supervisor) driveReload(in reloadInput) {
	for in.kind != 0 {
		var actions []reloadAction
		s.reload.machine, actions = s.reload.machine.step(in)
		in = reloadInput{}
		for _, a := range actions {
			if next := s.perform(a); next.kind != 0 {
				in = next
			}
		}
	}
}

// perform carries out one action of the reload machine and returns the
// input it yields, if any (only actBegin yields one).
func (s *Supervisor) perform(a reloadAction) reloadInput {
	switch a {
	case actBegin:
		return s.beginReload()
	case actCommit:
		s.commitReload()
	case actRollback:
		s.rollbackReload()
	case actReject:
		s.rejectReload()
	case actAnswer:
		s.answerReload(s.reload.waiters, s.reload.outcome)
		s.reload.waiters = nil
	case actAbandon:
		s.abandonReload()
	}
	return reloadInput{}
}

// beginReload loads the configuration and starts the next generation.
func (s *Supervisor) beginReload() reloadInput {
	r := &s.reload
	r.started = s.env.clock.Now()
	r.err = nil
	r.waiters, r.later = append(r.waiters, r.later...), nil
	s.notifySystemd(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicMicros()))
	g, err := s.prepareGeneration()
	if err != nil {
		r.err = err
		return reloadInput{kind: inRejected}
	}
	r.next = g
	s.log.Info("reload started", "generation", g.number, "workers", g.cfg.Workers, "listen", g.cfg.Listen,
		"command", g.cfg.Command)
	for i, sl := range g.slots {
		c, err := s.startChild(g, i)
		if err != nil {
			if r.err == nil {
				r.err = fmt.Errorf("slot %d: %w", i, err)
			}
			continue
		}
		sl.current = c
	}
	return reloadInput{kind: inSpawned, n: len(g.slots), failed: r.err != nil}
}

// prepareGeneration loads and checks the configuration of the next
// generation, and binds what it needs. An error means rejection: nothing
// changed.
func (s *Supervisor) prepareGeneration() (*generation, error) {
	cfg := s.cur.cfg
	if s.opts.Load != nil {
		var err error
		if cfg, err = s.opts.Load(); err != nil {
			return nil, err
		}
	}
	// The master's own sockets, log and steering are not the children's:
	// they stay until the next start.
	cfg, kept := keepStartOnly(s.cur.cfg, cfg)
	if len(kept) > 0 {
		s.log.Warn("settings changed that take effect at the next start, not on reload", "settings", kept)
	}
	g, err := newGeneration(s.cur.number+1, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Listen != s.cur.cfg.Listen && !s.sockets.has(cfg.Listen) {
		if err := sockopt.CheckFree(cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	if cfg.Sockets == SocketsMaster {
		if err := s.sockets.ensure(cfg.Listen, cfg.Workers); err != nil {
			s.sockets.release(s.inUse)
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	return g, nil
}

// commitReload makes the new generation the serving one and drains every
// child of the generations before it.
func (s *Supervisor) commitReload() {
	old := s.cur
	s.cur, s.reload.next = s.reload.next, nil
	for _, sl := range old.slots {
		sl.cancelRestart()
	}
	for _, c := range s.children {
		if c.gen != s.cur {
			s.drain(c)
		}
	}
	took := s.env.clock.Now().Sub(s.reload.started)
	s.tally.reloads["success"]++
	s.tally.reloadHist.Observe(took.Seconds())
	s.tally.slotsEver = max(s.tally.slotsEver, s.cur.cfg.Workers)
	s.log.Info("reload succeeded", "generation", s.cur.number, "took_ms", millis(took))
	s.reload.outcome = ReloadResult{Generation: s.cur.number}
	s.announced = true
	s.notifySystemd("READY=1")
	s.syncSteerSlots() // before a slot's socket closes: its queue migrates by the new count
	s.sockets.release(s.inUse)
	if old.cfg.Sockets != s.cur.cfg.Sockets {
		s.warnMigrateReq(s.cur.cfg)
	}
}

// rollbackReload drains the new generation; the old one never stopped.
func (s *Supervisor) rollbackReload() {
	if g := s.reload.next; g != nil {
		s.reload.next = nil
		for _, sl := range g.slots {
			sl.cancelRestart()
		}
		for _, c := range s.children {
			// Drained, not killed: a new child may already serve
			// connections while a sibling failed.
			if c.gen == g {
				s.drain(c)
			}
		}
	}
	s.tally.reloads["rolled_back"]++
	s.log.Error("reload rolled back; the old generation serves on", "generation", s.cur.number,
		"reason", s.reload.err.Error())
	s.reload.outcome = ReloadResult{Generation: s.cur.number, Err: fmt.Errorf("%w: %w", ErrRolledBack, s.reload.err)}
	s.reportReloadEnd()
	s.syncSteerSlots()
	s.sockets.release(s.inUse)
}

// rejectReload reports a configuration refused before anything started.
func (s *Supervisor) rejectReload() {
	s.tally.reloads["rejected"]++
	s.log.Error("reload rejected; nothing changed", "generation", s.cur.number, "reason", s.reload.err.Error())
	s.reload.outcome = ReloadResult{Generation: s.cur.number, Err: fmt.Errorf("%w: %w", ErrReloadRejected, s.reload.err)}
	s.reportReloadEnd()
}

// abortReload tells the machine that the supervisor stops.
func (s *Supervisor) abortReload() { s.driveReload(reloadInput{kind: inStop}) }

// abandonReload ends the running reload for a stop, which drains its
// children with every other; everyone waiting is told.
func (s *Supervisor) abandonReload() {
	r := &s.reload
	r.next = nil
	s.answerReload(append(r.waiters, r.later...), ReloadResult{Generation: s.cur.number, Err: ErrStopping})
	r.waiters, r.later = nil, nil
}

// reportReloadEnd tells systemd that a failed reload is over: the old
// generation serves, which is READY=1 once it has been ready at all.
func (s *Supervisor) reportReloadEnd() {
	if s.announced || allReady(s.cur) {
		s.announced = true
		s.notifySystemd("READY=1")
	}
}

// answerReload gives r to every caller in to; each channel has room for
// one, so the loop never waits.
func (s *Supervisor) answerReload(to []chan<- ReloadResult, r ReloadResult) {
	for _, w := range to {
		w <- r
	}
}

// inUse reports whether a master-held socket is still needed: by the
// serving or the starting generation. A draining child closed its copy at
// SIGTERM; keeping the socket open for it would only let new connections
// queue where nobody accepts them.
func (s *Supervisor) inUse(addr string, slotIndex int) bool {
	for _, g := range []*generation{s.cur, s.reload.next} {
		if g != nil && g.cfg.Sockets == SocketsMaster && g.cfg.Listen == addr && slotIndex < g.cfg.Workers {
			return true
		}
	}
	return false
}

// monotonicMicros is CLOCK_MONOTONIC in microseconds, as systemd wants
// it in MONOTONIC_USEC.
func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
