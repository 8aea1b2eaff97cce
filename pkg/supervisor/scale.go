package supervisor

import (
	"errors"
	"fmt"
)

// ErrScaleBusy is returned for a scale asked for while a reload runs: the
// reload's generation has its own worker count.
var ErrScaleBusy = errors.New("a reload is running; scale after it")

type scaleRequest struct {
	workers int // the new count, when delta is 0
	delta   int // +1 or -1 (SIGTTIN, SIGTTOU)
	reply   chan ScaleResult
}

// ScaleResult is the outcome of a scale: the worker count after it.
type ScaleResult struct {
	Workers int
	Err     error
}

// Scale sets the number of workers of the serving generation live: new
// slots get a child at once; the highest slots are drained when it goes
// down. It returns once the change is made (children started or told to
// drain).
func (s *Supervisor) Scale(workers int) ScaleResult { return s.scale(scaleRequest{workers: workers}) }

// ScaleBy changes the number of workers by delta (SIGTTIN: +1, SIGTTOU: -1).
func (s *Supervisor) ScaleBy(delta int) ScaleResult { return s.scale(scaleRequest{delta: delta}) }

func (s *Supervisor) scale(req scaleRequest) ScaleResult {
	req.reply = make(chan ScaleResult, 1)
	select {
	case s.events <- req:
	case <-s.quit:
		return ScaleResult{Err: ErrNotRunning}
	}
	select {
	case r := <-req.reply:
		return r
	case <-s.quit:
		return ScaleResult{Err: ErrNotRunning}
	}
}

// rescale runs on the loop.
func (s *Supervisor) rescale(req scaleRequest) ScaleResult {
	g := s.cur
	n := req.workers
	if req.delta != 0 {
		n = g.cfg.Workers + req.delta
	}
	switch {
	case s.stopping != 0:
		return ScaleResult{Workers: g.cfg.Workers, Err: ErrStopping}
	case s.reload.phase != reloadIdle:
		return ScaleResult{Workers: g.cfg.Workers, Err: ErrScaleBusy}
	case n < 1 || n > MaxWorkers:
		return ScaleResult{Workers: g.cfg.Workers, Err: fmt.Errorf("workers: %d is out of range 1..%d", n, MaxWorkers)}
	}
	old := g.cfg.Workers
	if g.cfg.Sockets == SocketsMaster && n > old {
		if err := s.sockets.ensure(g.cfg.Listen, n); err != nil {
			return ScaleResult{Workers: old, Err: err}
		}
	}
	for i := n; i < old; i++ {
		sl := g.slots[i]
		if sl.timer != nil {
			sl.timer.Stop()
		}
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
	s.slotsEver = max(s.slotsEver, n)
	s.syncSteerSlots() // before a slot's socket closes: its queue migrates by the new count
	s.sockets.release(s.inUse)
	s.log.Info("scaled", "from", old, "to", n)
	return ScaleResult{Workers: n}
}
