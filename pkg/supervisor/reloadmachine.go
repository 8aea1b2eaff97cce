package supervisor

// The reload sequence is a pure state machine: step takes the state and an
// input and returns the new state and the actions to take. The loop's
// driver (driveReload, reload.go) performs the actions; the one that
// starts a generation yields the next input, which the driver feeds back,
// so nothing re-enters the machine while its actions run. This is where a
// reload is decided.
//
//	idle ──request──▶ loading ──loaded──▶ spawning ──spawned──▶ starting ──every new child ready──▶ idle  (commit)
//	                     │                   │   └──a start failed──┐  └──a new child failed───────▶ idle  (roll back)
//	                     │                   │                      └──────────────────────────────▶ idle  (roll back)
//	                     └───────────────────┴──config rejected────────────────────────────────────▶ idle  (reject)
//	spawning ──spawned for a rollout──▶ rolling ──rolled out──▶ idle (commit)
//	                                       └─────rolled back──▶ idle (roll back)
//
// Loading waits for the configuration, which a goroutine reads off the
// loop (reload.go, startLoad): a config file on a hung filesystem must not
// stop supervision. A read that passes its deadline is a rejection.
//
// Every end is followed by answer (the callers of that reload get its
// outcome). A request while a reload runs is coalesced: however many
// arrive, one more reload begins right after the current one ends, as
// systemd does. A stop abandons the reload and answers everyone.

// reloadPhase is where the reload sequence is.
type reloadPhase uint8

const (
	reloadIdle     reloadPhase = iota // no reload running
	reloadLoading                     // the configuration is being read, off the loop
	reloadSpawning                    // the new generation is being checked and started
	reloadStarting                    // its children are starting; waiting for each READY=1
	reloadRolling                     // a rollout replaces the slots (rollout.go); waiting for its end
)

// reloadMachine is the state of the reload sequence.
type reloadMachine struct {
	phase   reloadPhase
	waiting int  // starting: children of the new generation not ready yet
	again   bool // another reload was asked for during this one
}

// reloadInputKind says what happened.
type reloadInputKind uint8

const (
	inRequest    reloadInputKind = iota + 1 // a reload was asked for
	inLoaded                                // the configuration was read
	inSpawned                               // the new generation was started: n children, failed if a start failed
	inRejected                              // the new configuration was refused, or could not be read in time
	inNewReady                              // a child of the new generation said READY=1
	inNewFailed                             // a child of the new generation exited or timed out
	inStop                                  // the supervisor stops
	inRolledOut                             // the rollout replaced every slot
	inRolledBack                            // the rollout failed and every slot went back
)

type reloadInput struct {
	kind    reloadInputKind
	n       int  // inSpawned: the number of children started
	failed  bool // inSpawned: a child failed to start
	rolling bool // inSpawned: nothing started yet; a rollout replaces the slots
}

// reloadAction is what the loop must do.
type reloadAction uint8

const (
	// actLoad: start reading the configuration off the loop; inLoaded or
	// inRejected follows, yielded at once when there is nothing to read.
	actLoad reloadAction = iota + 1
	// actBegin: check the configuration read and start the new
	// generation; yields inSpawned or inRejected.
	actBegin
	// actCommit: the new generation becomes current; drain the old one.
	actCommit
	// actRollback: drain the new generation; the old one serves on.
	actRollback
	// actReject: the configuration was refused; nothing changed.
	actReject
	// actAnswer: give the callers of the reload that ended its outcome.
	actAnswer
	// actAbandon: a stop ends the reload; answer every caller, those of
	// a coalesced reload too, that the supervisor is stopping.
	actAbandon
	// actRoll: begin the rollout; yields inRolledOut or inRolledBack if
	// it ends at once.
	actRoll
)

// step is the reload state machine. Inputs that make no sense in a phase
// (a stray ready after a rollback, say) change nothing. In spawning, no
// child of the new generation can be heard from yet: the driver feeds
// actBegin's outcome before the loop handles any other event. In loading,
// the loop handles every other event while it waits.
func (m reloadMachine) step(in reloadInput) (reloadMachine, []reloadAction) {
	if in.kind == inStop {
		if m.phase == reloadIdle {
			return m, nil
		}
		return reloadMachine{}, []reloadAction{actAbandon}
	}
	switch m.phase {
	case reloadIdle:
		if in.kind == inRequest {
			return reloadMachine{phase: reloadLoading}, []reloadAction{actLoad}
		}
	case reloadLoading:
		switch in.kind {
		case inRequest:
			m.again = true
		case inLoaded:
			m.phase = reloadSpawning
			return m, []reloadAction{actBegin}
		case inRejected:
			return m.finish(actReject)
		}
	case reloadSpawning:
		switch in.kind {
		case inRequest:
			m.again = true
		case inSpawned:
			switch {
			case in.rolling:
				m.phase = reloadRolling
				return m, []reloadAction{actRoll}
			case in.failed:
				return m.finish(actRollback)
			case in.n == 0:
				return m.finish(actCommit)
			}
			m.phase, m.waiting = reloadStarting, in.n
		case inRejected:
			return m.finish(actReject)
		}
	case reloadStarting:
		switch in.kind {
		case inRequest:
			m.again = true
		case inNewReady:
			if m.waiting <= 0 {
				break // a stray READY=1; the count is spent
			}
			if m.waiting--; m.waiting == 0 {
				return m.finish(actCommit)
			}
		case inNewFailed:
			return m.finish(actRollback)
		}
	case reloadRolling:
		switch in.kind {
		case inRequest:
			m.again = true
		case inRolledOut:
			return m.finish(actCommit)
		case inRolledBack:
			return m.finish(actRollback)
		}
	}
	return m, nil
}

// finish ends the current reload with outcome, answers its callers, and
// begins the coalesced one, if any.
func (m reloadMachine) finish(outcome reloadAction) (reloadMachine, []reloadAction) {
	if m.again {
		return reloadMachine{phase: reloadLoading}, []reloadAction{outcome, actAnswer, actLoad}
	}
	return reloadMachine{}, []reloadAction{outcome, actAnswer}
}
