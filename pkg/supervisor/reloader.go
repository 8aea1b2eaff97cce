package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// This file carries out the actions of the reload state machine
// (reload.go) on real processes. Every function runs on the event loop.

func (s *Supervisor) requestReload(reply chan ReloadResult) {
	if s.stopping != 0 {
		if reply != nil {
			reply <- ReloadResult{Generation: s.cur.number, Err: ErrStopping}
		}
		return
	}
	if reply != nil {
		if s.reload.phase == reloadIdle {
			s.waiters = append(s.waiters, reply)
		} else {
			s.queued = append(s.queued, reply)
		}
	}
	s.log.Info("reload requested", "running_already", s.reload.phase != reloadIdle)
	s.reloadStep(reloadInput{kind: inRequest})
}

// reloadStep feeds the state machine and performs what it returns.
func (s *Supervisor) reloadStep(in reloadInput) {
	var actions []reloadAction
	s.reload, actions = s.reload.step(in)
	for _, a := range actions {
		switch a {
		case actBegin:
			s.beginReload()
		case actCommit:
			s.commitReload()
		case actRollback:
			s.rollbackReload()
		case actReject:
			s.rejectReload()
		}
	}
}

func (s *Supervisor) beginReload() {
	s.reloadStart = time.Now()
	s.reloadErr = nil
	if len(s.waiters) == 0 {
		s.waiters, s.queued = s.queued, nil
	}
	s.notifySystemd(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicMicros()))
	g, err := s.prepareGeneration()
	if err != nil {
		s.reloadErr = err
		s.reloadStep(reloadInput{kind: inRejected})
		return
	}
	s.next = g
	s.log.Info("reload started", "generation", g.number, "workers", g.cfg.Workers, "listen", g.cfg.Listen,
		"command", g.cfg.Command)
	var failed error
	for i, sl := range g.slots {
		c, err := s.startChild(g, i)
		if err != nil {
			if failed == nil {
				failed = fmt.Errorf("slot %d: %w", i, err)
			}
			continue
		}
		sl.current = c
	}
	s.reloadStep(reloadInput{kind: inSpawned, n: len(g.slots)})
	if failed != nil {
		s.reloadErr = failed
		s.reloadStep(reloadInput{kind: inNewFailed})
	}
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
	// The master's own sockets and log are not the children's: they stay.
	if cfg.Control != s.cur.cfg.Control || cfg.LogFormat != s.cur.cfg.LogFormat || cfg.Metrics != s.cur.cfg.Metrics ||
		cfg.Steer != s.cur.cfg.Steer {
		s.log.Warn("control, metrics, log-format and steer take effect at the next start, not on reload")
		cfg.Control, cfg.LogFormat, cfg.Metrics = s.cur.cfg.Control, s.cur.cfg.LogFormat, s.cur.cfg.Metrics
		cfg.Steer = s.cur.cfg.Steer
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
	s.cur, s.next = s.next, nil
	cancelRestarts(old)
	for _, c := range s.children {
		if c.gen != s.cur {
			s.drain(c)
		}
	}
	took := time.Since(s.reloadStart)
	s.reloads["success"]++
	s.reloadHist.Observe(took.Seconds())
	s.slotsEver = max(s.slotsEver, s.cur.cfg.Workers)
	s.log.Info("reload succeeded", "generation", s.cur.number, "took", took.Round(time.Microsecond).String())
	s.finishReload(nil)
	s.announced = true
	s.notifySystemd("READY=1")
	s.syncSteerSlots() // before a slot's socket closes: its queue migrates by the new count
	s.sockets.release(s.inUse)
	if old.cfg.Sockets != s.cur.cfg.Sockets {
		s.warnMigrateReq(s.cur.cfg)
	}
}

// rollbackReload kills the new generation; the old one never stopped.
func (s *Supervisor) rollbackReload() {
	g := s.next
	s.next = nil
	if g != nil {
		cancelRestarts(g)
		for _, c := range s.children {
			// Drained, not killed: a new child may already serve
			// connections while a sibling failed.
			if c.gen == g {
				s.drain(c)
			}
		}
	}
	s.reloads["rolled_back"]++
	s.log.Error("reload rolled back; the old generation serves on", "generation", s.cur.number,
		"reason", s.reloadErr.Error())
	s.finishReload(fmt.Errorf("%w: %w", ErrRolledBack, s.reloadErr))
	s.reportReloadEnd()
	s.syncSteerSlots()
	s.sockets.release(s.inUse)
}

func (s *Supervisor) rejectReload() {
	s.reloads["rejected"]++
	s.log.Error("reload rejected; nothing changed", "generation", s.cur.number, "reason", s.reloadErr.Error())
	s.finishReload(fmt.Errorf("%w: %w", ErrReloadRejected, s.reloadErr))
	s.reportReloadEnd()
}

// reportReloadEnd tells systemd that a failed reload is over: the old
// generation serves, which is READY=1 once it has been ready at all.
func (s *Supervisor) reportReloadEnd() {
	if s.announced || s.allReady(s.cur) {
		s.announced = true
		s.notifySystemd("READY=1")
	}
}

// finishReload answers everyone waiting for the running reload.
func (s *Supervisor) finishReload(err error) {
	for _, w := range s.waiters {
		w <- ReloadResult{Generation: s.cur.number, Err: err}
	}
	s.waiters = nil
	if errors.Is(err, ErrStopping) {
		for _, w := range s.queued {
			w <- ReloadResult{Generation: s.cur.number, Err: err}
		}
		s.queued = nil
	}
}

func cancelRestarts(g *generation) {
	for _, sl := range g.slots {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
	}
}

// inUse reports whether a master-held socket is still needed: by the
// serving or the starting generation. A draining child closed its copy at
// SIGTERM; keeping the socket open for it would only let new connections
// queue where nobody accepts them.
func (s *Supervisor) inUse(addr string, slotIndex int) bool {
	for _, g := range []*generation{s.cur, s.next} {
		if g != nil && g.cfg.Sockets == SocketsMaster && g.cfg.Listen == addr && slotIndex < g.cfg.Workers {
			return true
		}
	}
	return false
}

func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
