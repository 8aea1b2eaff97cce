package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
)

// Recycling replaces a child that has done enough (--max-accepts) or grown
// too big (--max-rss) the way a reload replaces a generation, one slot at a
// time: the successor starts beside it, and only once the successor is
// ready is the old child drained. A successor that fails leaves the old
// child serving.

// recycleInterval is how often the loop compares the children's counters
// with the limits; the memory check, a /proc read per child, runs every
// rssEvery-th time.
const (
	recycleInterval = 100 * time.Millisecond
	rssEvery        = 10
)

// minRecycleRetry holds off the next attempt at a slot whose successor
// failed, when the backoff would allow one sooner.
const minRecycleRetry = time.Second

type recycleKey struct {
	slot   int
	reason string
}

// acceptLimit returns a child's own limit: max plus up to 10%, so that
// children started together do not all recycle together.
func acceptLimit(max uint64) uint64 {
	if max == 0 {
		return 0
	}
	return max + rand.Uint64N(max/10+1)
}

// recycleChecks is the ticker of the recycling checks.
type recycleChecks struct {
	ticker ticker // nil when no limit is set
	ticks  int
}

// set starts or stops the ticker, and returns its channel (nil when
// stopped): an idle master without limits wakes for nothing.
func (r *recycleChecks) set(clk clock, on bool) <-chan time.Time {
	return toggleTicker(clk, &r.ticker, recycleInterval, on)
}

// checkRecycling starts a successor for every ready child of the serving
// generation past a limit. At most a quarter of the slots (at least one)
// recycle at once: each successor's start costs CPU the others serve with.
func (s *Supervisor) checkRecycling() {
	if s.stopping != 0 || !s.reload.idle() {
		return
	}
	s.recycleChecks.ticks++
	cfg := s.cur.cfg
	readRSS := cfg.MaxRSS > 0 && s.recycleChecks.ticks%rssEvery == 0
	busy := 0
	for _, sl := range s.cur.slots {
		if sl.successor != nil {
			busy++
		}
	}
	now := s.env.clock.Now()
	for i, sl := range s.cur.slots {
		if busy >= max(1, len(s.cur.slots)/4) {
			return
		}
		c := sl.current
		if c == nil || c.life != lifeReady || sl.successor != nil || now.Before(sl.noRecycleBefore) {
			continue
		}
		if c.acceptLimit > 0 {
			if n := c.accepts(); n >= c.acceptLimit {
				s.recycle(i, metrics.RecycleMaxAccepts, "accepts", n, "limit", c.acceptLimit)
				busy++
				continue
			}
		}
		if readRSS {
			rss, err := s.env.procs.rss(c.pid)
			if err != nil {
				continue // exiting; the reaper will tell
			}
			if rss >= cfg.MaxRSS {
				s.recycle(i, metrics.RecycleMaxRSS, "rss", rss, "limit", cfg.MaxRSS)
				busy++
			}
		}
	}
}

// recycle starts the successor of the current child of slot i.
func (s *Supervisor) recycle(i int, reason string, attrs ...any) {
	sl := s.cur.slots[i]
	old := sl.current
	s.log.Info("recycling child; its successor starts first", append([]any{"slot", i,
		"generation", s.cur.number, "pid", old.pid, "reason", reason}, attrs...)...)
	c, err := s.startChild(s.cur, i)
	if err != nil {
		s.log.Error("successor failed to start; the child serves on", "slot", i, "pid", old.pid, "err", err)
		s.holdRecycling(sl)
		return
	}
	old.life = lifeRecycling
	sl.successor, sl.recycleReason = c, reason
}

// recycled finishes a recycle once the successor is ready: it takes the
// slot and the old child drains.
func (s *Supervisor) recycled(sl *slot) {
	old, c, why := sl.current, sl.successor, sl.recycleReason
	sl.current, sl.successor, sl.recycleReason = c, nil, ""
	if old == nil {
		return // the old child died meanwhile; exited counted it
	}
	s.tally.recycles[recycleKey{slot: c.slot, reason: why}]++
	s.log.Info("child recycled", "slot", c.slot, "generation", c.gen.number, "old_pid", old.pid,
		"pid", c.pid, "reason", why)
	s.drain(old)
}

// successorFailed handles the exit of a successor before it was ready.
func (s *Supervisor) successorFailed(sl *slot, c *child, reason string) {
	if old := sl.current; old != nil && old.life == lifeRecycling {
		old.life = lifeReady
	}
	sl.failures++
	s.holdRecycling(sl)
	s.log.Error("successor failed; the child serves on", "slot", c.slot, "pid", c.pid, "reason", reason,
		"retry_after_ms", millis(sl.noRecycleBefore.Sub(s.env.clock.Now())))
}

func (s *Supervisor) holdRecycling(sl *slot) {
	sl.noRecycleBefore = s.env.clock.Now().Add(max(minRecycleRetry, restartDelay(sl.failures)))
}
