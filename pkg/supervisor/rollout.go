package supervisor

// A rollout is a reload that replaces the children slot by slot instead of
// starting a whole generation beside the old one: a rolling reload
// (--reload-strategy rolling), and any reload with canaries (--canary).
// Like the reload machine, it is a pure state machine: step takes an
// input and returns the actions; the loop (rolling.go) performs them.
//
// Forward, a slot goes
//
//	old ──startNew──▶ starting ──its new child ready──▶ new (the old child drains)
//
// with at most surge slots starting at once. With canaries, the first
// canary slots go forward, then the rollout watches them for a while and
// only then goes on. With the generation strategy, the slots after the
// canaries start as one batch, and their old children drain only once
// every one of them is ready (waiting), as a generation reload does.
// Once every slot is new, the rollout commits.
//
// A new child that fails turns the rollout back: the new children still
// starting drain (their old ones never stopped), and every replaced slot
// gets a child of the old configuration again, surge at a time, ready
// before the new one drains:
//
//	new ──startOld──▶ restoring ──its old child ready──▶ old (the new child drains)
//
// Once no slot is new or restoring, the rollout has rolled back. A slot
// whose old child keeps failing to come back gives up (the loop says when):
// its new child stays, and joins the old generation.
type rollout struct {
	n     int // slots of the new generation
	oldN  int // slots of the old one: a slot past it has no old child
	surge int // slots starting at once, forward and back
	// canary is how many slots go first and are watched; watched says
	// that the watch is over (or there is none).
	canary  int
	watched bool
	// batch: the slots after the canaries start together (strategy
	// generation).
	batch bool
	phase rollPhase
	slots []rollSlot
	// order is the order the slots go in: those the old generation did
	// not have first (they replace nothing, and in master socket mode
	// their sockets already take connections), then the others from 0.
	// The canaries are the first of it.
	order []int
	// back is the replaced slots waiting to go back, in order.
	back []int
}

// rollPhase is where a rollout is.
type rollPhase uint8

const (
	rollForward  rollPhase = iota // replacing slots
	rollWatching                  // the canaries are replaced and watched
	rollBack                      // a new child failed; going back
	rollDone                      // committed or rolled back
)

// rollSlot is where one slot of a rollout is.
type rollSlot uint8

const (
	slotOld       rollSlot = iota // served by its old child; nothing new started
	slotStarting                  // its new child starts beside the old one
	slotWaiting                   // its new child is ready and waits for the rest of its batch
	slotNew                       // its new child serves; the old one drains
	slotRestoring                 // going back: an old child starts beside the new one
)

// rollInputKind says what happened.
type rollInputKind uint8

const (
	rollBegin     rollInputKind = iota + 1
	rollReady                   // the slot's new child (fresh) or restoring old child is ready
	rollFailed                  // the slot's new child (fresh) or restoring old child failed
	rollWatchOver               // the canaries lived through their watch
	// rollGiveUp: the slot's old child failed to come back too often;
	// its new child stays.
	rollGiveUp
)

type rollInput struct {
	kind  rollInputKind
	slot  int
	fresh bool // of the new configuration
}

// rollActionKind is what the loop must do.
type rollActionKind uint8

const (
	// actStartNew: start a child of the new generation in slot.
	actStartNew rollActionKind = iota + 1
	// actDrainOld: the old child of slot drains; the slot is the new
	// generation's now.
	actDrainOld
	// actWatch: start the canaries' watch; rollWatchOver follows.
	actWatch
	// actStartOld: start a child of the old generation in slot again.
	actStartOld
	// actRetryOld: the old child of slot failed to come back; start
	// another after the backoff.
	actRetryOld
	// actDrainNew: the new child of slot, if any, drains.
	actDrainNew
	// actCommitted: every slot is new; the reload commits.
	actCommitted
	// actRolledBack: every slot is old again; the reload rolls back.
	actRolledBack
	// actAdopt: the slot keeps its new child, which joins the old
	// generation.
	actAdopt
)

type rollAction struct {
	kind rollActionKind
	slot int
}

// newRollout plans a rollout from oldN slots to n, with the settings of
// the new configuration.
func newRollout(oldN, n int, cfg Config) *rollout {
	r := &rollout{n: n, oldN: oldN, surge: cfg.surge(), canary: min(cfg.Canary, n), slots: make([]rollSlot, n)}
	r.watched = r.canary == 0
	for j := oldN; j < n; j++ {
		r.order = append(r.order, j)
	}
	for j := 0; j < min(oldN, n); j++ {
		r.order = append(r.order, j)
	}
	if cfg.strategy() == StrategyGeneration {
		// Canaries first, then the rest as one generation.
		r.batch = true
		r.surge = max(r.canary, 1)
	}
	return r
}

// step is the rollout machine. Inputs that make no sense in a phase (a
// ready from a slot that is not starting) change nothing.
func (r *rollout) step(in rollInput) []rollAction {
	if r.phase == rollDone {
		return nil
	}
	var acts []rollAction
	switch in.kind {
	case rollBegin:
		acts = r.forward(acts)
	case rollReady:
		acts = r.ready(in, acts)
	case rollFailed:
		acts = r.failed(in, acts)
	case rollWatchOver:
		if r.phase == rollWatching {
			r.phase, r.watched = rollForward, true
			acts = r.forward(acts)
		}
	case rollGiveUp:
		if i := in.slot; r.phase == rollBack && i >= 0 && i < r.n && r.slots[i] == slotRestoring {
			r.slots[i] = slotOld
			acts = r.backward(append(acts, rollAction{kind: actAdopt, slot: i}))
		}
	}
	return acts
}

// ready takes a child that became ready.
func (r *rollout) ready(in rollInput, acts []rollAction) []rollAction {
	i := in.slot
	if i < 0 || i >= r.n {
		return acts
	}
	switch {
	case in.fresh && r.slots[i] == slotStarting && r.phase != rollBack:
		if r.batch && r.watched {
			r.slots[i] = slotWaiting
			if r.count(slotStarting) > 0 {
				return acts
			}
			for j, st := range r.slots {
				if st == slotWaiting {
					r.slots[j] = slotNew
					acts = append(acts, rollAction{kind: actDrainOld, slot: j})
				}
			}
		} else {
			r.slots[i] = slotNew
			acts = append(acts, rollAction{kind: actDrainOld, slot: i})
		}
		return r.forward(acts)
	case !in.fresh && r.slots[i] == slotRestoring && r.phase == rollBack:
		r.slots[i] = slotOld
		acts = append(acts, rollAction{kind: actDrainNew, slot: i})
		return r.backward(acts)
	}
	return acts
}

// failed takes a child that failed.
func (r *rollout) failed(in rollInput, acts []rollAction) []rollAction {
	i := in.slot
	if i < 0 || i >= r.n {
		return acts
	}
	if !in.fresh {
		if r.phase == rollBack && r.slots[i] == slotRestoring {
			acts = append(acts, rollAction{kind: actRetryOld, slot: i})
		}
		return acts
	}
	if r.phase == rollBack {
		// A replaced slot's new child died while the slot waits to go
		// back: nobody serves it, so it goes back now, past the surge.
		if k := indexOf(r.back, i); k >= 0 {
			r.back = append(r.back[:k], r.back[k+1:]...)
			r.slots[i] = slotRestoring
			acts = append(acts, rollAction{kind: actStartOld, slot: i})
		}
		return acts
	}
	if r.slots[i] == slotOld {
		return acts // not started: nothing of the rollout failed
	}
	r.phase = rollBack
	for j, st := range r.slots {
		switch st {
		case slotStarting, slotWaiting:
			// Its old child never stopped.
			r.slots[j] = slotOld
			acts = append(acts, rollAction{kind: actDrainNew, slot: j})
		case slotNew:
			if j < r.oldN && j != i {
				r.back = append(r.back, j)
				continue
			}
			if j < r.oldN {
				// The failed child's own slot: nobody serves it.
				r.slots[j] = slotRestoring
				acts = append(acts, rollAction{kind: actStartOld, slot: j})
				continue
			}
			// A slot the old configuration did not have.
			r.slots[j] = slotOld
			acts = append(acts, rollAction{kind: actDrainNew, slot: j})
		}
	}
	return r.backward(acts)
}

// forward starts new children where the surge and the canaries allow, and
// commits once every slot is new; with the canaries replaced, it watches
// them first.
func (r *rollout) forward(acts []rollAction) []rollAction {
	if r.phase != rollForward {
		return acts
	}
	if !r.watched && r.count(slotNew) >= r.canary {
		r.phase = rollWatching
		return append(acts, rollAction{kind: actWatch})
	}
	if r.count(slotNew) == r.n {
		r.phase = rollDone
		return append(acts, rollAction{kind: actCommitted})
	}
	limit, surge := r.n, r.surge
	if !r.watched {
		limit = r.canary
	} else if r.batch {
		surge = r.n // the rest as one generation
	}
	busy := r.count(slotStarting) + r.count(slotWaiting)
	for _, j := range r.order[:limit] {
		if busy >= surge {
			break
		}
		if r.slots[j] == slotOld {
			r.slots[j] = slotStarting
			busy++
			acts = append(acts, rollAction{kind: actStartNew, slot: j})
		}
	}
	return acts
}

// backward starts old children for the replaced slots where the surge
// allows, and ends once none is left.
func (r *rollout) backward(acts []rollAction) []rollAction {
	busy := r.count(slotRestoring)
	for len(r.back) > 0 && busy < r.surge {
		j := r.back[0]
		r.back = r.back[1:]
		r.slots[j] = slotRestoring
		busy++
		acts = append(acts, rollAction{kind: actStartOld, slot: j})
	}
	if busy == 0 && len(r.back) == 0 {
		r.phase = rollDone
		acts = append(acts, rollAction{kind: actRolledBack})
	}
	return acts
}

// count returns how many slots are in st.
func (r *rollout) count(st rollSlot) int {
	n := 0
	for _, s := range r.slots {
		if s == st {
			n++
		}
	}
	return n
}

// done returns how many slots a ready new child serves.
func (r *rollout) done() int { return r.count(slotNew) }

// handedOver reports whether slot i of the old generation has been handed
// to the new one: its old child drains and must not be restarted.
func (r *rollout) handedOver(i int) bool {
	return i < r.n && (r.slots[i] == slotNew || r.slots[i] == slotRestoring)
}

func indexOf(s []int, v int) int {
	for k, x := range s {
		if x == v {
			return k
		}
	}
	return -1
}
