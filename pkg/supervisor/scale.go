package supervisor

import (
	"errors"
	"fmt"
)

// ErrScaleBusy is returned for a scale asked for while a reload runs: the
// reload's generation has its own worker count.
var ErrScaleBusy = errors.New("a reload is running; scale after it")

// ScaleResult is the outcome of a scale: the worker count after it.
type ScaleResult struct {
	Workers int
	Err     error
}

// rescale runs on the loop.
func (s *Supervisor) rescale(n int) ScaleResult {
	g := s.cur
	switch {
	case s.stopping != 0:
		return ScaleResult{Workers: g.cfg.Workers, Err: ErrStopping}
	case !s.reload.idle():
		return ScaleResult{Workers: g.cfg.Workers, Err: ErrScaleBusy}
	case n < 1 || n > MaxWorkers:
		return ScaleResult{Workers: g.cfg.Workers, Err: fmt.Errorf("workers: %d is out of range 1..%d", n, MaxWorkers)}
	}
	old := g.cfg.Workers
	if n > old {
		more := g.cfg
		more.Workers = n
		if err := checkFDs(more); err != nil {
			return ScaleResult{Workers: old, Err: err}
		}
	}
	if g.cfg.Sockets == SocketsMaster && n > old {
		if err := s.sockets.ensure(g.cfg.Listen, n); err != nil {
			return ScaleResult{Workers: old, Err: err}
		}
	}
	for i := n; i < old; i++ {
		sl := g.slots[i]
		sl.cancelRestart()
		for _, c := range []*child{sl.current, sl.successor} {
			if c != nil {
				s.drain(c)
			}
		}
	}
	if n < old {
		g.slots = g.slots[:n]
	}
	g.cfg.Workers = n
	for i := old; i < n; i++ {
		g.slots = append(g.slots, &slot{})
		s.startServing(i)
	}
	s.tally.slotsEver = max(s.tally.slotsEver, n)
	s.syncSteerSlots() // before a slot's socket closes: its queue migrates by the new count
	s.sockets.release(s.inUse)
	s.log.Info("scaled", "from", old, "to", n)
	return ScaleResult{Workers: n}
}
