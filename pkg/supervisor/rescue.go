package supervisor

import (
	"context"
	"slices"
	"time"
)

// Rescue (issue 13): steering keeps new connections away from a stuck
// slot, but those already in its accept queue would wait for its child to
// resume or be killed: with clients that never give up (a proxy's
// connection pool), all of them end up there within milliseconds and the
// service stops. When a slot is steered away from with connections
// queued, the loop moves them to the healthy slots:
//
//  1. a goroutine freezes the processes that hold the slot's socket (the
//     cgroup freezer where a child has a cgroup of its own, SIGSTOP
//     otherwise; a process already stopped stays as it is), so that none
//     of them is woken in accept by step 2 with EINVAL, on which Go's
//     http.Server stops serving for good;
//  2. the loop shuts the socket down for reading, which hands every
//     established connection queued on it to the listener the steering
//     program selects (it is loaded to choose for migrating connections
//     too), then listens on it again and puts it back in the program's
//     sockets array (steer.Steerer.Requeue);
//  3. the loop thaws what step 1 froze.
//
// Handshakes in flight are not moved: they complete into the re-listened
// queue, and the next check rescues them too. The slot stays steered away
// from until it shows progress (slotHealth.rescued).

// rescueFreezeTimeout bounds the wait for a stuck slot's processes to be
// frozen. A process that does not stop in time is in the kernel (a thread
// in uninterruptible sleep is not in accept, and the others are stopped):
// the queue moves anyway.
const rescueFreezeTimeout = 50 * time.Millisecond

// frozen is what the loop learns when a rescue's freeze has ended.
type frozen struct {
	slot int
	seq  uint64 // the rescue it ends; the loop ignores a stale one
	// inode and pids are the slot's socket and its holders when the
	// freeze began: if either changed since (a renewed socket, a new
	// child, a copy taken of another), the processes now holding the
	// socket were not all frozen, and nothing moves.
	inode uint64
	pids  []int
	thaw  func() error
	whole bool  // every process was seen stopped
	err   error // why not
}

// rescue tracks the rescues of the serving address's slots.
type rescue struct {
	seq      uint64
	inFlight map[int]uint64 // the rescue under way, by slot
}

// startRescues starts a rescue of every slot steered away from with
// connections queued on it, unless one is under way; called at the end
// of each steering check.
func (s *Supervisor) startRescues(queued []uint32) {
	away := s.steeredAway()
	prog := s.steering.of
	if away == nil || prog == nil || !prog.Migrates() {
		return
	}
	for slot, q := range queued {
		if slot >= len(away) || !away[slot] || q == 0 {
			continue
		}
		if _, busy := s.steering.rescue.inFlight[slot]; busy {
			continue
		}
		s.startRescue(slot)
	}
}

// startRescue freezes the processes holding slot's socket, off the loop,
// and has the loop move the queue when they are.
func (s *Supervisor) startRescue(slot int) {
	r := &s.steering.rescue
	if r.inFlight == nil {
		r.inFlight = make(map[int]uint64)
	}
	r.seq++
	seq := r.seq
	r.inFlight[slot] = seq
	pids := s.holdersOf(slot)
	inode := s.slotInode(slot)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), rescueFreezeTimeout)
		defer cancel()
		ev := frozen{slot: slot, seq: seq, inode: inode, pids: pids}
		ev.thaw, ev.whole, ev.err = s.env.observe.freeze(ctx, pids)
		if !s.sendOr(ev) {
			ev.thaw() // the loop is gone: nothing to move
		}
	}()
}

// holdersOf returns the children that hold slot's socket of the serving
// address: in master socket mode every child of the slot, of any
// generation, draining or not.
func (s *Supervisor) holdersOf(slot int) []int {
	if s.cur.cfg.Sockets != SocketsMaster {
		// In child socket mode, the child whose listener it is (and
		// its processes: observer.freeze takes its tree).
		if pid := s.taken.holder(s.cur.cfg.steerKey(), slot); pid != 0 {
			return []int{pid}
		}
		return nil
	}
	var pids []int
	for _, c := range s.children {
		if c.slot == slot && s.steers(c) {
			pids = append(pids, c.pid)
		}
	}
	return pids
}

// rescueFrozen moves the queue of ev's slot, if it is still steered away
// from, and thaws what the freeze stopped.
func (s *Supervisor) rescueFrozen(ev frozen) {
	thawed := false
	thaw := func() {
		if thawed {
			return
		}
		thawed = true
		if err := ev.thaw(); err != nil {
			s.log.Error("could not thaw the processes of a rescued slot", "slot", ev.slot, "err", err)
		}
	}
	defer thaw()
	r := &s.steering.rescue
	if r.inFlight[ev.slot] != ev.seq {
		return
	}
	delete(r.inFlight, ev.slot)
	away := s.steeredAway()
	if ev.slot >= len(away) || !away[ev.slot] || s.steering.of == nil {
		return // it resumed, or steering changed, meanwhile
	}
	if s.slotInode(ev.slot) != ev.inode || !subset(s.holdersOf(ev.slot), ev.pids) {
		return // another socket, or another holder: the next check starts again
	}
	if ev.err != nil {
		s.log.Debug("moving a stuck slot's queue with some of its processes not seen stopped", "slot", ev.slot, "err", ev.err)
	}
	moved, err := s.requeue(ev.slot)
	thaw()
	if h := s.steering.health[ev.slot]; h != nil {
		// After a failure too: the slot waits for its probe rather than
		// being frozen again at every check.
		h.rescued(s.env.clock.Now())
	}
	if err != nil {
		s.log.Error("could not move the connections queued on a stuck slot", "slot", ev.slot, "err", err)
		return
	}
	if moved == 0 {
		return
	}
	s.tally.rescued[ev.slot] += uint64(moved)
	s.log.Warn("moved the connections queued on a stuck slot to the healthy slots", "slot", ev.slot,
		"connections", moved, "all_frozen", ev.whole)
}

// slotInode returns the inode of slot's socket of the serving address (the
// master's own, or its copy of the slot's child's), or 0.
func (s *Supervisor) slotInode(slot int) uint64 {
	if s.cur.cfg.Sockets != SocketsMaster {
		return s.taken.inode(s.cur.cfg.steerKey(), slot)
	}
	return s.sockets.inode(s.cur.cfg.steerKey(), slot)
}

// subset reports whether every pid of a is in b.
func subset(a, b []int) bool {
	for _, pid := range a {
		if !slices.Contains(b, pid) {
			return false
		}
	}
	return true
}

// requeue moves the queue of slot's socket of the serving address.
func (s *Supervisor) requeue(slot int) (uint32, error) {
	if s.cur.cfg.Sockets != SocketsMaster {
		return s.taken.requeue(s.cur.cfg.steerKey(), slot)
	}
	return s.sockets.requeue(s.cur.cfg.steerKey(), slot)
}

// undoPending undoes what the events still buffered when the loop ended
// carry: a freeze to thaw, a copy of a listener to close. Their senders
// saw the loop take them.
func (s *Supervisor) undoPending() {
	for {
		select {
		case ev := <-s.events:
			switch ev := ev.(type) {
			case frozen:
				ev.thaw()
			case took:
				if ev.err == nil {
					closeFD(ev.fd)
				}
			}
		default:
			return
		}
	}
}

// sendOr delivers an event to the loop and reports true, or reports false
// once the loop is gone: the caller then undoes what the event carries.
func (s *Supervisor) sendOr(ev any) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.quit:
		return false
	}
}
