package supervisor

import "time"

// DefaultStuckWindow is how long a slot's accept queue may hold
// connections without one accept before the slot counts as stuck.
const DefaultStuckWindow = 100 * time.Millisecond

// healthInput is what the loop sees of one slot at one steering tick.
type healthInput struct {
	ready   bool   // a ready child serves the slot
	hung    bool   // its child missed its watchdog
	accepts uint64 // the slot's accept count, all its children
	queued  uint32 // connections waiting in its accept queue
	now     time.Time
	window  time.Duration
	// interval is the checks' usual period. A queue seen where the check
	// before saw none is taken to have filled at most one interval ago:
	// the check before may be longer ago, as the checks back off while
	// the group is idle. 0: since the check before.
	interval time.Duration
	counting bool // the slot's child counts its accepts on its page
	// cpu is the CPU time its children's cgroups have used, when timed.
	cpu   time.Duration
	timed bool
}

// slotHealth decides whether a slot takes new connections. A slot is
// unhealthy while it has no ready child, while its child missed its
// watchdog, and while its queue holds connections and no accept has been
// counted for a window: a stopped, deadlocked or paused child. It is
// healthy again as soon as it accepts.
type slotHealth struct {
	healthy  bool
	accepts  uint64        // at the last tick
	queued   uint32        // at the last tick
	cpu      time.Duration // at the last tick that read it
	timed    bool          // the last tick read the CPU
	progress time.Time     // the last tick it accepted, or had nothing waiting
}

// update feeds one tick and reports whether the verdict changed.
func (h *slotHealth) update(in healthInput) (changed bool) {
	if since := in.now.Add(-in.interval); in.interval > 0 && in.queued > 0 && h.queued == 0 &&
		!h.progress.IsZero() && since.After(h.progress) {
		h.progress = since
	}
	switch {
	case in.accepts > h.accepts, in.queued == 0, h.progress.IsZero():
		h.progress = in.now
	case !in.counting && in.queued < h.queued:
		// A child that does not count its accepts (a server not built
		// on pkg/child) shows progress by its queue going down...
		h.progress = in.now
	case !in.counting && in.timed && h.timed && in.cpu > h.cpu:
		// ... or by its processes working: a busy server's queue may
		// hold steady while it accepts as fast as connections come. A
		// stopped or deadlocked one uses no CPU. The CPU is read only
		// while a queue waits: the first reading is a baseline, not
		// progress since a tick that did not read it.
		h.progress = in.now
	}
	h.accepts, h.queued, h.timed = in.accepts, in.queued, in.timed
	if in.timed {
		h.cpu = in.cpu
	}
	stuck := in.now.Sub(h.progress) >= in.window
	healthy := in.ready && !in.hung && !stuck
	changed = healthy != h.healthy
	h.healthy = healthy
	return changed
}

// restart gives the slot a new stuck window from its next check: a child
// that just became ready has not had the time to accept what queued for
// it while it started.
func (h *slotHealth) restart() {
	h.progress = time.Time{}
}
