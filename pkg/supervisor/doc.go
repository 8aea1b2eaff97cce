// Package supervisor runs a prefork group: N child processes, one per slot,
// each binding its own SO_REUSEPORT listener on one address, so that the
// kernel spreads connections over them.
//
// # Process model
//
// One goroutine, the event loop (Supervisor.Run), owns every piece of
// mutable state: the table of children by pid, the slots and the stop mode.
// Everything else sends it events:
//
//   - the reaper, the process's only caller of wait4, reports every process
//     that ended: children, and orphans re-parented to the master when it is
//     PID 1 of a container;
//   - the notify reader reports sd_notify datagrams with the sender's pid,
//     stamped by the kernel (SO_PASSCRED);
//   - timers report a ready timeout, a drain timeout or a due restart; each
//     carries the child it was armed for, and the loop ignores it when that
//     child is gone;
//   - Stop and Status calls; a request carries its own reply channel.
//
// Children are forked by one goroutine locked to its OS thread, so that
// their parent-death signal (SIGTERM) fires when the master dies and never
// when the Go runtime retires a thread. They run in a process group of their
// own, so a terminal's Ctrl-C reaches the master alone, which drains them.
// They inherit stdin (/dev/null), stdout and stderr, and nothing else.
//
// # A child's life
//
// A child starts in state starting. READY=1 on NOTIFY_SOCKET makes it
// ready; no READY=1 within Config.ReadyTimeout gets it SIGKILLed and counted
// as a failed start. Draining is SIGTERM, then SIGKILL at
// Config.DrainTimeout. An exit the supervisor did not ask for is a failure
// of the slot and is restarted: the first failure at once, then after
// 100 ms, doubling to 30 s; a child that had been ready for 10 s resets the
// count.
//
// # Stopping
//
// A graceful stop drains every child; a fast stop SIGKILLs them. Run
// returns once every child has been reaped.
package supervisor
