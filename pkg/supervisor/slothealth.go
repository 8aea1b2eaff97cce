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
	// rescuedAt is when its queue was last moved to the healthy slots
	// (rescue.go); zero when it has shown progress since. An empty queue
	// is then no sign of health: the rescue emptied it.
	rescuedAt time.Time
	// rescues counts the rescues since the slot last showed progress:
	// the probes after each wait twice as long.
	rescues int
	// ran: its processes used CPU since the rescue.
	ran bool
	// probed is when the last probe gave it connections again, and
	// probedAccepts its accepts then.
	probed        time.Time
	probedAccepts uint64
}

// A rescued slot stays steered away from until its child accepts, or a
// probe gives it new connections again to see whether it resumed: a
// child still stuck then holds the connections of one stuck window, and
// is rescued again. The probe comes after rescueProbe if its processes
// used CPU since the rescue (a stopped child uses none: one that did may
// have resumed, or may be stuck in a loop), after 10 times that if the
// CPU is not known or was not used; each doubles with every rescue in a
// row, the first up to rescueProbeMax, the second up to
// rescueBlindProbeMax. A stopped child that is resumed after many
// rescues is thus back within rescueProbeMax of its first CPU use; one
// stopped for good holds connections for 100 ms every 8 s.
const (
	rescueProbe         = 100 * time.Millisecond
	rescueProbeMax      = 800 * time.Millisecond
	rescueBlindProbeMax = 8 * time.Second
)

// probeDue reports whether a rescued slot is to be given new connections
// again at now.
func (h *slotHealth) probeDue(now time.Time) bool {
	shift := min(h.rescues-1, 8)
	wait := min(rescueProbe<<shift, rescueProbeMax)
	if !h.ran {
		wait = min(10*rescueProbe<<shift, rescueBlindProbeMax)
	}
	return now.Sub(h.rescuedAt) >= wait
}

// update feeds one tick and reports whether the verdict changed.
func (h *slotHealth) update(in healthInput) (changed bool) {
	if since := in.now.Add(-in.interval); in.interval > 0 && in.queued > 0 && h.queued == 0 &&
		!h.progress.IsZero() && since.After(h.progress) {
		h.progress = since
	}
	if !h.rescuedAt.IsZero() {
		h.ran = h.ran || in.timed && h.timed && in.cpu > h.cpu
		switch {
		case in.accepts > h.accepts:
			// It accepted: it resumed.
			h.rescuedAt, h.rescues = time.Time{}, 0
		case h.probeDue(in.now):
			h.rescuedAt, h.probed, h.probedAccepts = time.Time{}, in.now, in.accepts
		}
		if h.rescuedAt.IsZero() {
			h.progress = in.now
		}
	}
	switch {
	case !h.rescuedAt.IsZero():
		// Steered away until it shows progress or the probe is due.
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
	healthy := in.ready && !in.hung && !stuck && h.rescuedAt.IsZero()
	if healthy && h.rescues > 0 && in.now.Sub(h.probed) >= 10*in.window {
		h.rescues = 0 // the probe found it serving: a later stop starts afresh
	}
	changed = healthy != h.healthy
	h.healthy = healthy
	return changed
}

// restart gives the slot a new stuck window from its next check: a child
// that just became ready has not had the time to accept what queued for
// it while it started.
func (h *slotHealth) restart() {
	h.progress = time.Time{}
	// Its rescues were of the child before: a new child starts afresh.
	h.rescuedAt, h.rescues, h.ran = time.Time{}, 0, false
}

// rescued records that the slot's queue was just moved away: it stays
// unhealthy until it shows progress (an accept, or CPU used by its
// processes) or its probe is due.
func (h *slotHealth) rescued(now time.Time) {
	h.rescuedAt, h.ran = now, false
	h.rescues++
}

// probing reports whether the slot is healthy only because its probe
// came due after a rescue, with no progress seen since.
func (h *slotHealth) probing() bool {
	return h.rescues > 0 && !h.probed.IsZero() && h.accepts == h.probedAccepts
}

// wantsCPU reports whether the next tick should read the CPU of the
// slot's processes though its children count their accepts: after a
// rescue, CPU is how a resumed child that has nothing to accept shows it.
func (h *slotHealth) wantsCPU() bool { return !h.rescuedAt.IsZero() }
