package supervisor

import (
	"errors"
	"maps"
	"slices"

	"github.com/prefork/prefork/pkg/metrics"
	"github.com/prefork/prefork/pkg/steer"
)

// Per-slot connection counts for any server (prefork_child_connections_total):
// the steering program counts the new connections it places in each slot's
// listener, whether or not the children count their accepts. A program
// lives as long as its group: when the group goes (a reload that moves the
// address, a switch to child socket mode, the master's stop) its counts are
// folded into the tally first, so that a slot's total never goes down.

// countedSlots is how many slots a program's counts are read for: every
// slot a generation using it may have had.
func (s *Supervisor) countedSlots() int {
	n := max(s.tally.slotsEver, s.cur.cfg.Workers, len(s.cur.slots), s.steering.slots)
	if g := s.reload.next; g != nil {
		n = max(n, len(g.slots))
	}
	return min(n, MaxWorkers)
}

// foldConnections adds the counts of a program about to be closed to the
// tally. A count that cannot be read is lost, and said so.
func (s *Supervisor) foldConnections(p *steer.Steerer) {
	per, unplaced, err := p.Connections(s.countedSlots())
	if err != nil {
		s.log.Error("could not read the steering program's connection counts before closing it; prefork_child_connections_total misses them", "err", err)
		return
	}
	for slot, n := range per {
		if n > 0 {
			s.tally.connections[slot] += n
		}
	}
	s.tally.unplaced += unplaced
}

// snapshotConnections fills the connection counts of snap, whose Slots
// are set: the tally plus the live programs' counts.
func (s *Supervisor) snapshotConnections(snap *metrics.Snapshot) {
	if !s.sockets.steer && !s.taken.on {
		return
	}
	snap.Steered = true
	snap.Unplaced = s.tally.unplaced
	for i := range snap.Slots {
		snap.Slots[i].Connections = s.tally.connections[snap.Slots[i].Slot]
	}
	var errs []error
	var progs []*steer.Steerer
	for addr, p := range s.sockets.steerers {
		if !isPacketKey(addr) { // a UDP group's program counts datagrams
			progs = append(progs, p)
		}
	}
	for _, p := range append(progs, slices.Collect(maps.Values(s.taken.steerers))...) {
		per, unplaced, err := p.Connections(len(snap.Slots))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		snap.Unplaced += unplaced
		for i, n := range per {
			snap.Slots[i].Connections += n
		}
	}
	snap.ConnectionsErr = errors.Join(errs...)
}
