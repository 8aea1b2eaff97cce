package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/version"
	"golang.org/x/sys/unix"
)

// The new master's side of an upgrade in place: it reads the state the
// old one wrote (upgradestate.go) and goes on with the same children,
// sockets, counts and backoffs.

// UpgradeStateEnv names the variable that gives a master the descriptor
// of the state it goes on from; the exec of an upgrade sets it, and the
// master removes it from its environment.
const UpgradeStateEnv = "PREFORK_UPGRADE_STATE"

// CheckUpgrade reads the state at fd as an upgraded master would, without
// acting on it: the old master runs the new binary with it before the
// exec, and refuses the upgrade with the error this returns.
func CheckUpgrade(fd int) error {
	st, err := readState(fd)
	if err != nil {
		return err
	}
	for _, g := range st.Gens {
		if err := g.Config.Validate(); err != nil {
			return fmt.Errorf("generation %d: %w", g.Number, err)
		}
	}
	if len(st.Gens) == 0 || st.Generation <= 0 {
		return errors.New("read the state: no serving generation")
	}
	return nil
}

// Resume returns the supervisor of a master upgraded in place: the state
// at fd, written by the master it replaced, instead of a configuration.
// Run then goes on where that master stopped.
func Resume(fd int, opts Options) (*Supervisor, error) {
	st, err := readState(fd)
	if err != nil {
		return nil, err
	}
	st.Children = ownChildren(st.Children, logger(opts))
	// Every thread of this master inherited the children's seccomp
	// guard: its answerer must run before the first steering program is
	// attached.
	files := procsFile{Guard: st.Guard, NNP: st.NNP, CgroupToken: st.CgroupToken, CgroupsMade: st.CgroupsMade,
		Cgroups: st.Cgroups, Outputs: st.Outputs}
	if st.Guard >= 0 {
		if files.guard, err = adoptGuard(st.Guard, st.NNP, logger(opts)); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
	}
	e, devnull, err := osEnv(opts)
	if err != nil {
		return nil, err
	}
	if h, ok := e.procs.(takesOver); ok {
		h.takeOver(files)
	}
	s, err := resumeSupervisor(st, opts, e)
	if err != nil {
		devnull.Close()
		return nil, fmt.Errorf("resume: %w", err)
	}
	s.devnull = devnull
	return s, nil
}

// takesOver is procs that takes over what an old master's procs handed
// on, before run.
type takesOver interface {
	takeOver(p procsFile)
}

// resumeSupervisor is Resume with the outside world given.
func resumeSupervisor(st *upgradeState, opts Options, e env) (*Supervisor, error) {
	if e.shim == "" {
		e.shim = "/proc/self/exe"
	}
	self, err := os.Executable()
	if err != nil {
		self = st.Binary // the exec's own, as the old master named it
	}
	gens := make(map[int]*generation, len(st.Gens))
	for _, gf := range st.Gens {
		g := &generation{number: gf.Number, cfg: gf.Config, argv: gf.Argv, id: identityOfFile(gf.ID)}
		g.slots = make([]*slot, gf.Config.Workers)
		for i := range g.slots {
			g.slots[i] = &slot{}
		}
		gens[g.number] = g
	}
	cur := gens[st.Generation]
	if cur == nil {
		return nil, fmt.Errorf("the serving generation %d is not in the state", st.Generation)
	}
	for i, sf := range st.Slots {
		if i < len(cur.slots) {
			*cur.slots[i] = slot{failures: sf.Failures, lastExit: sf.LastExit, retryAt: sf.RetryAt, note: sf.Note,
				noRecycleBefore: sf.NoRecycleBefore}
		}
	}
	if base, live := st.Tally.LogDropped, opts.LogDropped; base > 0 {
		// The new master's log writer counts from 0.
		opts.LogDropped = func() uint64 {
			if live == nil {
				return base
			}
			return base + live()
		}
	}
	s := newBare(opts, e, self, cur)
	s.tally = tallyOfFile(st.Tally)
	s.upgrades, s.announced = st.Upgrades, st.Announced
	supported := e.steerSupported
	if st.SteerOff == "" {
		// The old master steered: the program loads here. Loading one
		// only to know would cost the new master's start a verifier
		// run; a load that fails now turns steering off, said.
		supported = func() error { return nil }
	}
	on, why, err := decideSteering(cur.cfg, supported)
	if err != nil {
		// --steer on, and the program no longer loads: the children
		// serve on, unsteered, rather than the master ending here.
		s.log.Error("steering is off after the upgrade", "err", err)
		on, why = false, err.Error()
	}
	s.sockets.steer, s.steering.off = on, why
	s.taken.on, s.taken.retire = on, s.foldConnections
	s.followReservations()
	s.sockets.retire = s.foldConnections
	s.sockets.store = e.fdstore // already holds the sockets, the same ones
	for _, cf := range st.Children {
		g := gens[cf.Generation]
		if g == nil {
			return nil, fmt.Errorf("child %d: generation %d is not in the state", cf.PID, cf.Generation)
		}
		c := &child{pid: cf.PID, gen: g, slot: cf.Slot, life: cf.Life, started: cf.Started, readyAt: cf.ReadyAt,
			drainAt: cf.DrainAt, lastPing: cf.LastPing, acceptsSeen: cf.AcceptsSeen, countsSeen: cf.CountsSeen, acceptLimit: cf.AcceptLimit,
			seenWaiting: cf.SeenWaiting}
		if cf.Page >= 0 {
			if c.page, err = counters.AdoptPage(cf.Page); err != nil {
				s.log.Warn("a child's counter page could not be taken over; its accepts read as they were", "pid", cf.PID, "err", err)
			}
		}
		s.children[c.pid] = c
		s.gate.add(c.pid)
		if g.id != nil {
			s.gate.allowUID(int(g.id.uid))
		}
		if g == cur && c.life != lifeDraining && c.slot < len(cur.slots) {
			cur.slots[c.slot].current = c
		}
	}
	if err := s.adoptFDs(st); err != nil {
		s.release()
		return nil, err
	}
	s.resumed = st
	return s, nil
}

// resumeChildren arms again what the exec ended for every child taken
// over: the timers of its life, the watch of a starting one, the
// steering of a ready one; and restarts the slots waiting for it. Run
// calls it before it reaps the exits that happened during the exec.
func (s *Supervisor) resumeChildren() {
	st := s.resumed
	s.resumed = nil
	now := s.env.clock.Now()
	left := func(from time.Time, d time.Duration) time.Duration { return max(d-now.Sub(from), 0) }
	for _, c := range s.children {
		cfg := c.gen.cfg
		switch c.life {
		case lifeStarting:
			c.readyTimer = s.env.clock.AfterFunc(left(c.started, cfg.ReadyTimeout), func() { s.send(readyTimeout{c: c}) })
			fd := -1
			if cfg.Sockets == SocketsMaster {
				fd = s.sockets.held(cfg.Listen.first().key(), c.slot)
			}
			s.awaitReady(c, fd)
			if cfg.Ready.Mode == ReadyDelay {
				// From its start, as the ready timeout.
				stopTimer(c.delayTimer)
				c.delayTimer = s.env.clock.AfterFunc(left(c.started, cfg.Ready.Delay), func() { s.send(delayOver{c: c}) })
			}
		case lifeReady, lifeRecycling:
			if cfg.Watchdog > 0 && !c.lastPing.IsZero() {
				c.watchdogTimer = s.env.clock.AfterFunc(left(c.lastPing, cfg.Watchdog), func() { s.send(watchdogExpired{c: c}) })
			}
			s.takeListener(c)
		case lifeHung, lifeLate:
			// Its SIGKILL was due soon; the exec ended the timer.
			s.kill(c, unix.SIGKILL)
		case lifeDraining:
			s.armDrainTimer(c, left(c.drainAt, cfg.DrainTimeout))
		}
	}
	for i, sl := range s.cur.slots {
		switch {
		case sl.current != nil:
		case !sl.retryAt.IsZero():
			sl.restart = s.env.clock.AfterFunc(max(sl.retryAt.Sub(now), 0), func() { s.send(restartDue{s: sl}) })
		default:
			s.startServing(i)
		}
	}
	s.tally.upgrades["success"]++
	s.syncReservations() // child socket mode's, for the children's uid
	s.syncSteerSlots()
	s.steerTick()
	s.log.Info("master upgraded in place", "from", st.Version, "to", version.String(), "pid", s.pid(),
		"children", len(s.children), "generation", s.cur.number, "upgrades", s.upgrades,
		"exec_to_loop_ms", millis(now.Sub(st.At)))
	if s.announced {
		s.notifySystemd("READY=1\nSTATUS=")
	}
}

// readState reads and decodes the state at fd, and closes fd.
func readState(fd int) (*upgradeState, error) {
	f := os.NewFile(uintptr(fd), "upgrade-state")
	if f == nil {
		return nil, fmt.Errorf("read the state: no descriptor %d", fd)
	}
	defer f.Close()
	if err := checkSealed(fd); err != nil {
		return nil, fmt.Errorf("read the state: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read the state: %w", err)
	}
	if fi.Size() > maxStateSize {
		return nil, fmt.Errorf("read the state: %d bytes, more than %d", fi.Size(), maxStateSize)
	}
	// At offset 0 whatever the descriptor's offset: the check and the
	// exec share the one the old master wrote with.
	data, err := io.ReadAll(io.NewSectionReader(f, 0, fi.Size()))
	if err != nil {
		return nil, fmt.Errorf("read the state: %w", err)
	}
	return decodeState(data)
}

// maxStateSize bounds the state a master reads: 64 MiB holds the state
// of MaxWorkers children many times over.
const maxStateSize = 64 << 20
