// Package supervisor runs a prefork group: N child processes, one per slot,
// each binding its own SO_REUSEPORT listener on one address (or, in master
// socket mode, given one the master holds), so that the kernel spreads
// connections over them.
//
// # Process model
//
// One goroutine, the event loop (loop.go), owns every piece of mutable
// state: the table of children by pid, the generations and their slots,
// the reload in progress, the totals behind the metrics and the stop
// mode. Everything else sends it events:
//
//   - SIGCHLD wakes it to reap: the loop is the process's only caller of
//     wait4, so a pid in its table is never one the kernel has freed;
//   - the notify reader reports sd_notify datagrams with the sender's pid,
//     stamped by the kernel (SO_PASSCRED);
//   - timers report a ready timeout, a drain timeout, a watchdog expiry, a
//     ready delay or a due restart; each carries the child or slot it was
//     armed for, and the loop ignores it when that child is gone;
//   - a watch goroutine per starting child (--ready listen, and master
//     socket mode) reports when the kernel shows it waiting for
//     connections, and one per early exit what holds the address: they
//     read /proc and netlink (the observer seam), never the loop;
//   - the public API (api.go) sends calls that run on the loop and answer
//     on a channel of their own.
//
// The loop reaches the operating system only through a seam (env.go):
// procs starts, signals, reaps and releases processes, clock arms timers,
// observer reads what the kernel shows of a child. Run uses
// the real ones; the package's tests drive every scenario in-process with
// fake processes and a fake clock.
//
// Children are forked by one goroutine locked to its OS thread, so that
// their parent-death signal (SIGTERM) fires when the master dies and never
// when the Go runtime retires a thread. They run in a process group of their
// own, so a terminal's Ctrl-C reaches the master alone, which drains them.
// They inherit stdin (/dev/null), stdout and stderr (or pipes the master
// copies, prefixed, under --child-output prefix), their counter page and,
// in master socket mode, their slot's listener, and nothing else. Where
// the master can make cgroups each child is forked into one of its own;
// the master is the children's subreaper; and when a child is reaped,
// what is left of its process group and cgroup is killed (release).
//
// # A child's life
//
// A child is in one life at a time (child.go): starting until it is ready
// (ready.go: READY=1 on NOTIFY_SOCKET in every mode, or, by Config.Ready,
// seen waiting for connections or alive after a delay); late (SIGKILLed,
// a failed start) when it is not ready within Config.ReadyTimeout; hung (SIGQUIT, then SIGKILL)
// when it pinged WATCHDOG=1 and then went silent; recycling while a
// successor starts beside it; draining after Config.StopSignal, with SIGKILL at
// Config.DrainTimeout. An exit is classified by the life it ends
// (exit.go): a planned one ends there; an unplanned exit of a serving
// child restarts its slot, the first failure at once, then after 100 ms,
// doubling to 30 s. Only a program that does not get going is a failure
// (judgeExit): a child that was ready for BackoffReset, or was killed
// from outside, or served and exited 0 resets the count.
//
// # Reloads
//
// A reload starts a whole new generation beside the serving one and drains
// the old one only once every new child is ready; a new child that fails
// rolls the reload back (its generation drains, the old one never
// stopped); a configuration that fails its checks is rejected with nothing
// changed. The sequence is a pure state machine (reloadmachine.go) that
// the loop drives (reload.go); requests during a reload coalesce into one
// more. The configuration is read off the loop, by Options.Load in a
// goroutine of its own with a deadline, so that a config file on a hung
// filesystem never stops supervision.
//
// # Stopping
//
// A graceful stop drains every child; a fast stop SIGKILLs them. Run
// returns once every child has been reaped.
package supervisor
