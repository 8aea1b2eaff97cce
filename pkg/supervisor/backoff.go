package supervisor

import (
	"time"

	"golang.org/x/sys/unix"
)

// Restart backoff, per slot. The backoff is for programs that fail to
// start, not for healthy children killed from outside: see judgeExit.
const (
	// BackoffInitial is the delay before the second restart in a row.
	BackoffInitial = 100 * time.Millisecond
	// BackoffMax caps the delay.
	BackoffMax = 30 * time.Second
	// BackoffReset is how long a child must have been ready for its exit,
	// however it came, not to count against the slot: the slot's failures
	// are wiped and the next restart is immediate. A child that accepted
	// a connection, or was killed from outside, needs no such time.
	BackoffReset = time.Second
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

// exitFacts is what the backoff knows of an unplanned exit of a child.
type exitFacts struct {
	status   unix.WaitStatus
	ready    bool          // it was ready (READY=1, seen waiting, --ready delay)
	readyFor time.Duration // from ready to its exit; 0 if never ready
	served   bool          // it counted an accepted connection on its page
	hung     bool          // the watchdog killed it: its own doing
}

// judgeExit reports whether an unplanned exit counts as a failure of the
// slot, toward its backoff. The backoff guards against a program that
// cannot start (a bad flag, a missing file, a port it cannot bind), which
// would otherwise be forked in a hot loop; it must not take a service
// down because someone (an operator, the OOM killer, a chaos tool) kills
// healthy children faster than BackoffReset. So:
//
//   - an exit before READY is a failure, whatever ended it: nothing tells
//     a start that cannot succeed from one killed on the way;
//   - a ready child that was ready for BackoffReset is not: the program
//     stays up;
//   - a ready child killed by a signal from outside (killedFromOutside) is
//     not either: the program worked until then;
//   - a ready child that served (accepted a connection) and exited 0 is
//     not: a worker that ends itself after its share of work;
//   - any other exit soon after READY (an exit code, a crash signal such
//     as SIGSEGV or SIGABRT, or the watchdog's kill) is a failure, served
//     or not: a request that crashes every child (a query of death, a bad
//     deploy) must not fork one per request.
func judgeExit(f exitFacts) bool {
	switch {
	case !f.ready:
		return true
	case f.readyFor >= BackoffReset:
		return false
	case f.hung:
		return true
	case f.status.Signaled() && killedFromOutside(f.status.Signal()):
		return false
	case f.served && f.status.Exited() && f.status.ExitStatus() == 0:
		return false
	}
	return true
}

// killedFromOutside reports whether a process killed by sig was most
// likely killed by another process (kill(1), a service manager, the OOM
// killer), rather than by its own fault: SIGSEGV, SIGBUS, SIGILL, SIGFPE,
// SIGABRT, SIGSYS, SIGTRAP, SIGPIPE, SIGXCPU, SIGXFSZ and the rest. A
// signal not listed counts as the program's own: when in doubt, back off.
func killedFromOutside(sig unix.Signal) bool {
	switch sig {
	case unix.SIGKILL, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2:
		return true
	}
	return false
}

// failuresAfterExit returns the slot's new count of failures in a row after
// one of its children exited unplanned: one more for a failure (judgeExit),
// 0 for an exit that does not count, so that the slot restarts at once.
func failuresAfterExit(failures int, f exitFacts) int {
	if judgeExit(f) {
		return failures + 1
	}
	return 0
}
