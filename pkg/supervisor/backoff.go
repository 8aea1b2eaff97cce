package supervisor

import "time"

// Restart backoff, per slot.
const (
	// BackoffInitial is the delay before the second restart in a row.
	BackoffInitial = 100 * time.Millisecond
	// BackoffMax caps the delay.
	BackoffMax = 30 * time.Second
	// BackoffReset is how long a child must have been ready for its exit
	// not to count against the slot: the next restart is then immediate.
	BackoffReset = 10 * time.Second
)

// restartDelay returns how long to wait before restarting a slot whose
// last failures children in a row exited unplanned. The first failure of a
// healthy slot restarts at once (a crash of a long-serving child should cost
// no more than a fork); from the second on the delay starts at
// BackoffInitial and doubles up to BackoffMax.
func restartDelay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := BackoffInitial
	for i := 2; i < failures; i++ {
		d *= 2
		if d >= BackoffMax {
			return BackoffMax
		}
	}
	return d
}

// failuresAfterExit returns the slot's new count of failures in a row after
// one of its children exited unplanned: a child that had been ready for
// BackoffReset or longer wipes the slate first.
func failuresAfterExit(failures int, readyAt, exitAt time.Time) int {
	if !readyAt.IsZero() && exitAt.Sub(readyAt) >= BackoffReset {
		failures = 0
	}
	return failures + 1
}
