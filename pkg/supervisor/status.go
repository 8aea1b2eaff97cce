package supervisor

import (
	"cmp"
	"os"
	"slices"
	"time"
)

// State is where a child is in its life.
type State string

// The states of a child, as reported by Status and the metrics.
const (
	// StateStarting: started, READY=1 not yet received.
	StateStarting State = "starting"
	// StateReady: said READY=1 and serves.
	StateReady State = "ready"
	// StateDraining: told to stop (SIGTERM); finishing what it has.
	StateDraining State = "draining"
)

// ChildStatus describes one live child, as GET /status shows it.
type ChildStatus struct {
	Slot       int   `json:"slot"`
	Generation int   `json:"generation"`
	PID        int   `json:"pid"`
	State      State `json:"state"`
	// Accepts counts the connections this child accepted, read live from
	// its counter page.
	Accepts uint64 `json:"accepts"`
	// Restarts counts the unplanned exits of the slot that were restarted,
	// over the life of the supervisor.
	Restarts      int       `json:"restarts"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Started       time.Time `json:"-"`
}

// Status is a snapshot of the supervisor, as GET /status shows it.
type Status struct {
	PID        int           `json:"pid"`
	Generation int           `json:"generation"`
	Workers    int           `json:"workers"`
	Sockets    string        `json:"sockets"`
	Children   []ChildStatus `json:"children"`
}

func (s *Supervisor) status() Status {
	st := Status{
		PID:        os.Getpid(),
		Generation: s.cur.number,
		Workers:    s.cur.cfg.Workers,
		Sockets:    s.cur.cfg.Sockets,
		Children:   []ChildStatus{},
	}
	now := s.env.clock.Now()
	for _, c := range s.children {
		st.Children = append(st.Children, ChildStatus{
			Slot:          c.slot,
			Generation:    c.gen.number,
			PID:           c.pid,
			State:         c.state(),
			Accepts:       c.page.Accepts(),
			Restarts:      s.tally.restarts[c.slot],
			UptimeSeconds: now.Sub(c.started).Seconds(),
			Started:       c.started,
		})
	}
	slices.SortFunc(st.Children, func(a, b ChildStatus) int {
		return cmp.Or(cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.Generation, b.Generation),
			a.Started.Compare(b.Started), cmp.Compare(a.PID, b.PID))
	})
	return st
}
