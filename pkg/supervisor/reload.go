package supervisor

// The reload sequence is a pure state machine: step takes the state and an
// input and returns the new state and the actions the event loop must
// perform. The loop feeds it what happened (a request, the new generation
// spawned or rejected, a new child ready or failed) and carries out the
// actions; nothing in here touches a process.
//
//	idle ──request──▶ starting ──all new children ready──▶ idle  (commit: drain the old)
//	                     │ └─────a new child failed────────▶ idle  (roll back: kill the new)
//	                     └───────config rejected───────────▶ idle  (reject: nothing changes)
//
// A request while starting is coalesced: however many arrive, one more
// reload runs after the current one ends, as systemd does.

// reloadPhase is where the reload sequence is.
type reloadPhase uint8

const (
	reloadIdle     reloadPhase = iota // no reload running
	reloadStarting                    // a new generation is starting
)

// reloadState is the state of the reload sequence.
type reloadState struct {
	phase   reloadPhase
	waiting int  // children of the new generation not ready yet
	queued  bool // a request arrived during this reload
}

// reloadInputKind says what happened.
type reloadInputKind uint8

const (
	inRequest   reloadInputKind = iota + 1 // a reload was asked for
	inSpawned                              // the new generation was started; n children
	inRejected                             // the new configuration was refused
	inNewReady                             // a child of the new generation said READY=1
	inNewFailed                            // a child of the new generation exited or timed out
)

type reloadInput struct {
	kind reloadInputKind
	n    int // for inSpawned: the number of children started
}

// reloadAction is what the loop must do.
type reloadAction uint8

const (
	// actBegin: load and check the configuration, start the new generation,
	// then feed inSpawned or inRejected.
	actBegin reloadAction = iota + 1
	// actCommit: the new generation becomes current; drain the old one and
	// report success.
	actCommit
	// actRollback: kill the new generation; the old one serves on. Report
	// the failure.
	actRollback
	// actReject: report the refused configuration; nothing changed.
	actReject
)

// step is the reload state machine. Inputs that make no sense in a phase
// (a stray ready after a rollback, say) change nothing.
func (s reloadState) step(in reloadInput) (reloadState, []reloadAction) {
	switch s.phase {
	case reloadIdle:
		if in.kind == inRequest {
			return reloadState{phase: reloadStarting, waiting: -1}, []reloadAction{actBegin}
		}
	case reloadStarting:
		switch in.kind {
		case inRequest:
			s.queued = true
			return s, nil
		case inSpawned:
			if s.waiting != -1 {
				return s, nil
			}
			s.waiting = in.n
			if s.waiting == 0 {
				return s.finish(actCommit)
			}
			return s, nil
		case inRejected:
			if s.waiting != -1 {
				return s, nil
			}
			return s.finish(actReject)
		case inNewReady:
			if s.waiting <= 0 {
				return s, nil
			}
			s.waiting--
			if s.waiting == 0 {
				return s.finish(actCommit)
			}
			return s, nil
		case inNewFailed:
			if s.waiting == 0 {
				return s, nil
			}
			return s.finish(actRollback)
		}
	}
	return s, nil
}

// finish ends the current reload with outcome and starts the queued one,
// if any.
func (s reloadState) finish(outcome reloadAction) (reloadState, []reloadAction) {
	if s.queued {
		return reloadState{phase: reloadStarting, waiting: -1}, []reloadAction{outcome, actBegin}
	}
	return reloadState{phase: reloadIdle}, []reloadAction{outcome}
}
