// Package freeze stops a set of children for a moment and resumes exactly
// what it stopped.
//
// # Why
//
// To move the accept queue of a stuck child's listener to the other
// listeners of its group, the supervisor calls shutdown(fd, SHUT_RD) and
// then listen(fd, backlog) on its own copy of the socket. Between the two
// calls the socket is not listening, and a child that shares it and is
// running then has its accept woken with EINVAL; Go's http.Server.Serve
// returns on that error, and the child stops serving for good. A child
// that is frozen during the two calls never sees that window: freezing
// the children removed the EINVAL (measured: 0 in 9,100 cycles).
//
// # Use
//
//	f, err := freeze.Freeze(ctx, targets) // from a goroutine, never the event loop
//	if f.Complete() {
//		// shutdown(fd, SHUT_RD); listen(fd, backlog)
//	}
//	err = f.Thaw() // always, also after an error
//
// # Two methods
//
// A child with a cgroup of its own is frozen with the cgroup v2 freezer
// (cgroup.Group.Freeze): one write stops every process of the group,
// forks in flight included, and cgroup.events says when all are frozen.
// A group that was frozen already (cgroup.freeze read 1) is someone
// else's, and Thaw leaves it frozen.
//
// A child without one is stopped process by process with SIGSTOP, and
// Freeze waits until every thread of each is stopped, reading
// /proc/PID/task/TID/stat with a short back-off (50 µs doubling to 1 ms).
// It never uses waitid(WSTOPPED), which does not report a stop an earlier
// wait already collected. A thread in uninterruptible sleep (D) counts as
// stopped: it stops before it returns to user code, so it cannot start an
// accept (see still in parse.go). A process that was stopped already
// (state T or t: an operator, a test, a debugger) is waited for but not
// signaled, and Thaw does not resume it. Exited and reaped processes are
// skipped.
//
// # Limits
//
//   - Pids are signaled by number. A pid could be reused between the
//     caller's listing and the signal only once its process was reaped;
//     the supervisor passes only pids of processes it has not reaped.
//   - A process that another party stops with SIGSTOP while it is frozen
//     here is resumed by Thaw all the same: SIGCONT cannot tell one stop
//     from another. Likewise a group another party freezes after Freeze
//     read cgroup.freeze is thawed by Thaw.
//   - A thread in D inside accept waits for the socket's lock; it could
//     run its accept between the caller's two calls only if a party
//     outside the freeze holds that lock then.
//   - The SIGSTOP method shows in the child's parent (SIGCHLD, WSTOPPED)
//     and in job-control shells; the cgroup method does not.
package freeze
