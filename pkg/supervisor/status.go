package supervisor

import (
	"cmp"
	"os"
	"slices"
	"time"

	"github.com/prefork/prefork/pkg/version"
)

// State is where a child is in its life.
type State string

// The states of a child, as reported by Status and the metrics.
const (
	// StateStarting: started, READY=1 not yet received.
	StateStarting State = "starting"
	// StateReady: said READY=1 and serves.
	StateReady State = "ready"
	// StateDraining: told to stop (--stop-signal); finishing what it
	// has.
	StateDraining State = "draining"
	// StateBackoff: a slot with no child, waiting to restart one (a row
	// of Status only, with PID 0).
	StateBackoff State = "backoff"
)

// ChildStatus describes one live child, as GET /status shows it.
type ChildStatus struct {
	Slot       int   `json:"slot"`
	Generation int   `json:"generation"`
	PID        int   `json:"pid"`
	State      State `json:"state"`
	// Accepts counts the connections this child accepted, read live from
	// its counter page: the most the page ever showed, since the child
	// writes it.
	Accepts uint64 `json:"accepts"`
	// Datagrams counts the datagrams it read on its UDP listeners, the
	// same way.
	Datagrams uint64 `json:"datagrams"`
	// Restarts counts the unplanned exits of the slot that were restarted,
	// over the life of the supervisor.
	Restarts      int       `json:"restarts"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Started       time.Time `json:"-"`
	// LastExit says how the slot's last child ended, and RetryInSeconds
	// when the next starts: set on StateBackoff rows.
	LastExit       string  `json:"last_exit,omitempty"`
	RetryInSeconds float64 `json:"retry_in_seconds,omitempty"`
	// Note is the master's diagnosis of why the slot's children fail
	// (see the README's "Running your server").
	Note string `json:"note,omitempty"`
}

// ReloadStatus is the reload in progress, as GET /status shows it.
type ReloadStatus struct {
	// Strategy is StrategyGeneration or StrategyRolling.
	Strategy string `json:"strategy"`
	// Phase is where it is: "loading" (reading the configuration),
	// "starting" (a generation's children are starting), "rolling"
	// (slots are being replaced), "canary" (the canaries are watched)
	// or "rolling_back" (replaced slots are going back).
	Phase string `json:"phase"`
	// Generation is the number of the generation being started.
	Generation int `json:"generation,omitempty"`
	// Slots is how many slots the new generation has, SlotsDone how many
	// of them a ready new child serves (the old one told to drain).
	Slots     int `json:"slots"`
	SlotsDone int `json:"slots_done"`
	// Canary is how many slots are watched first; CanaryLeftSeconds how
	// long the watch has to run (while Phase is "canary").
	Canary            int     `json:"canary,omitempty"`
	CanaryLeftSeconds float64 `json:"canary_left_seconds,omitempty"`
	// ElapsedSeconds is the time since the reload began.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
}

// Status is a snapshot of the supervisor, as GET /status shows it.
type Status struct {
	PID        int    `json:"pid"`
	Version    string `json:"version"` // the running binary's: version.String
	Generation int    `json:"generation"`
	Workers    int    `json:"workers"`
	Sockets    string `json:"sockets"`
	// Listen holds the serving generation's listeners, in order, as
	// --listen takes them: "http=127.0.0.1:8080", "dns=udp://[::1]:53".
	Listen []string `json:"listen"`
	// Ready is the serving generation's --ready.
	Ready string `json:"ready"`
	// Upgrades counts the upgrades in place since the master started;
	// UpgradeError says why the last one failed, if it did.
	Upgrades     int    `json:"upgrades"`
	UpgradeError string `json:"upgrade_error,omitempty"`
	// Reload is the reload in progress; nil when none runs.
	Reload *ReloadStatus `json:"reload,omitempty"`
	// Children has a row per live child, and one per slot of the serving
	// generation that is waiting to restart (StateBackoff).
	Children []ChildStatus `json:"children"`
}

func (s *Supervisor) status() Status {
	st := Status{
		PID:          os.Getpid(),
		Version:      version.String(),
		Generation:   s.cur.number,
		Workers:      s.cur.cfg.Workers,
		Sockets:      s.cur.cfg.Sockets,
		Listen:       make([]string, len(s.cur.cfg.Listen)),
		Ready:        s.cur.cfg.Ready.String(),
		Children:     []ChildStatus{},
		Upgrades:     s.upgrades,
		UpgradeError: s.upgrade.lastErr,
	}
	for i, l := range s.cur.cfg.Listen {
		st.Listen[i] = l.String()
	}
	now := s.env.clock.Now()
	if !s.reload.idle() {
		st.Reload = s.reloadStatus(now)
	}
	for _, c := range s.children {
		st.Children = append(st.Children, ChildStatus{
			Slot:          c.slot,
			Generation:    c.gen.number,
			PID:           c.pid,
			State:         c.state(),
			Accepts:       c.accepts(),
			Datagrams:     c.datagrams(),
			Restarts:      s.tally.restarts[c.slot],
			UptimeSeconds: now.Sub(c.started).Seconds(),
			Started:       c.started,
		})
		if sl := s.slotOf(c); sl != nil && (sl.current == c || sl.successor == c) {
			st.Children[len(st.Children)-1].Note = sl.note
		}
	}
	for i, sl := range s.cur.slots {
		if sl.current != nil || sl.restart == nil {
			continue
		}
		st.Children = append(st.Children, ChildStatus{
			Slot:           i,
			Generation:     s.cur.number,
			State:          StateBackoff,
			Restarts:       s.tally.restarts[i],
			LastExit:       sl.lastExit,
			RetryInSeconds: max(sl.retryAt.Sub(now), 0).Seconds(),
			Note:           sl.note,
		})
	}
	slices.SortFunc(st.Children, func(a, b ChildStatus) int {
		return cmp.Or(cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.Generation, b.Generation),
			a.Started.Compare(b.Started), cmp.Compare(a.PID, b.PID))
	})
	return st
}

// reloadStatus describes the running reload.
func (s *Supervisor) reloadStatus(now time.Time) *ReloadStatus {
	r := &s.reload
	rs := &ReloadStatus{Strategy: r.strategy, Phase: "loading", ElapsedSeconds: now.Sub(r.started).Seconds()}
	if g := r.next; g != nil {
		rs.Generation, rs.Slots = g.number, len(g.slots)
		rs.Phase = "starting"
		for _, sl := range g.slots {
			if c := sl.current; c != nil && c.life.serving() {
				rs.SlotsDone++
			}
		}
	}
	if ro := r.roll; ro != nil {
		rs.SlotsDone, rs.Canary = ro.done(), ro.canary
		switch ro.phase {
		case rollForward:
			rs.Phase = "rolling"
		case rollWatching:
			rs.Phase = "canary"
			rs.CanaryLeftSeconds = max(ro.watchUntil.Sub(now), 0).Seconds()
		case rollBack:
			rs.Phase = "rolling_back"
		}
	}
	return rs
}
