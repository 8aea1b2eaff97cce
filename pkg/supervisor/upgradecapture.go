package supervisor

import (
	"os"
	"slices"

	"github.com/prefork/prefork/pkg/version"
)

// handsOn is what of procs outlives an exec of the master: the children's
// seccomp guard and cgroups (osProcs).
type handsOn interface {
	// handOnErr says why procs cannot be handed on; nil when it can.
	handOnErr() error
	// handOn returns what the new master's procs takes over.
	handOn() procsFile
}

// procsFile is what osProcs hands on.
type procsFile struct {
	Guard       int // the guard's listener; -1: none
	NNP         bool
	CgroupToken string
	CgroupsMade int
	Cgroups     map[int]string
	Outputs     []outputFile // the children's output pipes (--child-output prefix)
	// guard is the answerer of the guard inherited (Guard), started
	// before anything else of the new master.
	guard *adoptedGuard
}

// pid returns the master's pid, which an upgrade keeps.
func (s *Supervisor) pid() int { return os.Getpid() }

// captureState returns what the new binary needs to go on, taken by the
// loop. It changes nothing: the check runs on one, and an exec that fails
// leaves the master as it was.
func (s *Supervisor) captureState(binary string) (*upgradeState, error) {
	st := &upgradeState{
		Format: upgradeFormat(), Version: version.String(), Binary: binary, At: s.env.clock.Now(),
		Upgrades: s.upgrades + 1, Generation: s.cur.number, Control: -1, Metrics: -1, Notify: -1, Guard: -1,
		Announced: s.announced, SteerOff: s.steering.off, Tally: fileOfTally(&s.tally),
	}
	snap := s.snapshot()
	// The live steering programs' counts: the new master loads programs
	// of its own, which count from 0.
	for _, sl := range snap.Slots {
		if sl.Connections > 0 {
			st.Tally.Connections[sl.Slot] = sl.Connections
		}
	}
	st.Tally.Unplaced = snap.Unplaced
	st.Tally.NotifyDropped = snap.NotifyDropped
	st.Tally.Refused = snap.Refused
	st.Tally.LogDropped = snap.LogDropped
	gens := map[*generation]bool{s.cur: true}
	for _, c := range s.children {
		gens[c.gen] = true
	}
	for g := range gens {
		st.Gens = append(st.Gens, generationFile{Number: g.number, Config: g.cfg, Argv: g.argv, ID: fileOfIdentity(g.id)})
	}
	slices.SortFunc(st.Gens, func(a, b generationFile) int { return a.Number - b.Number })
	for _, sl := range s.cur.slots {
		st.Slots = append(st.Slots, slotFile{Failures: sl.failures, LastExit: sl.lastExit, RetryAt: sl.retryAt,
			Note: sl.note, NoRecycleBefore: sl.noRecycleBefore})
	}
	for _, c := range s.children {
		st.Children = append(st.Children, childFile{PID: c.pid, Generation: c.gen.number, Slot: c.slot, Life: c.life,
			Started: c.started, ReadyAt: c.readyAt, DrainAt: c.drainAt, LastPing: c.lastPing, Page: c.page.FD(),
			AcceptsSeen: c.accepts(), CountsSeen: slices.Clone(c.counts()), AcceptLimit: c.acceptLimit, SeenWaiting: c.seenWaiting})
	}
	slices.SortFunc(st.Children, func(a, b childFile) int { return a.PID - b.PID })
	if err := s.captureFDs(st); err != nil {
		return nil, err
	}
	if h, ok := s.env.procs.(handsOn); ok {
		p := h.handOn()
		st.Guard, st.NNP = p.Guard, p.NNP
		st.CgroupToken, st.CgroupsMade, st.Cgroups = p.CgroupToken, p.CgroupsMade, p.Cgroups
		st.Outputs = p.Outputs
	}
	return st, nil
}
