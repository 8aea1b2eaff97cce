package freeze

import (
	"bytes"
	"fmt"
)

// parseState returns the state letter of /proc/PID/stat or
// /proc/PID/task/TID/stat: "PID (COMM) S ...". COMM is up to 16 bytes of
// anything, spaces and ')' included, so the state is the first field after
// the last ')'.
func parseState(b []byte) (byte, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 || bytes.IndexByte(b, '(') < 0 {
		return 0, fmt.Errorf("parse stat %q: no (comm)", clip(b))
	}
	f := bytes.Fields(b[end+1:])
	if len(f) == 0 || len(f[0]) != 1 {
		return 0, fmt.Errorf("parse stat %q: no state after (comm)", clip(b))
	}
	return f[0][0], nil
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	const most = 64
	if len(b) > most {
		return b[:most]
	}
	return b
}

// The states of /proc/PID/stat (fs/proc/array.c, task_state_array) that
// matter here.
const (
	stateStopped = 'T' // group stop: SIGSTOP, SIGTSTP, ...
	stateTraced  = 't' // stopped by a tracer
	stateDisk    = 'D' // uninterruptible sleep
	stateZombie  = 'Z' // exited, not reaped
	stateDead    = 'X' // being reaped
)

// exited reports a thread that will never run again.
func exited(s byte) bool { return s == stateZombie || s == stateDead }

// stopped reports a thread that is stopped (by anyone).
func stopped(s byte) bool { return s == stateStopped || s == stateTraced }

// still reports a thread that cannot run user code, and so cannot call
// accept, until the stop is lifted: stopped or exited, or in
// uninterruptible sleep. A thread in D is not let back to user code with
// a SIGSTOP pending: it stops on its way out of the kernel, before it
// could start another accept. Its sleep can be inside accept only while it
// waits for the socket's lock, held by another syscall on the same socket;
// the frozen children's own calls end before they stop, so only a party
// outside the freeze (the caller itself) could then hold the lock while
// the caller's shutdown and listen run. Waiting for D to end instead would
// make Freeze fail on a child whose disk or page-fault wait is slow, for
// nothing.
func still(s byte) bool { return stopped(s) || exited(s) || s == stateDisk }
