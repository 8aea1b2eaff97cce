package supervisor

import "time"

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

// ChildStatus describes one live child.
type ChildStatus struct {
	Slot       int
	Generation int
	PID        int
	State      State
	Started    time.Time
	// Restarts counts the unplanned exits of the slot that were restarted,
	// over the life of the supervisor.
	Restarts int
}

// Status is a snapshot of the supervisor.
type Status struct {
	PID        int
	Generation int
	Workers    int
	Sockets    string
	Children   []ChildStatus
}
