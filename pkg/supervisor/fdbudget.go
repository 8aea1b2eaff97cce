package supervisor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The master's file descriptor budget, measured (ls /proc/PID/fd) with
// margins: what a configuration needs open at once, so that a limit too
// low for it is refused before anything starts instead of leaving slots
// that never start (issue 12: ulimit -n 64 started 13 of 32 children).
const (
	// fdBase is the master's own: the runtime's, stdio, /dev/null, the
	// notify socket, the listeners of the control socket and the metrics
	// endpoint, steering programs and maps, the reservation of child
	// mode, and those open for a moment while a child starts or /proc is
	// read (15 to 21 measured with one child).
	fdBase = 40
	// fdPerChild is a child's counter page and pidfd.
	fdPerChild = 2
	// fdPerChildPrefix is the read ends of its stdout and stderr with
	// --child-output prefix.
	fdPerChildPrefix = 2
	// fdPerSlotMaster is a slot's socket of one listener in master
	// socket mode, or the copy of its child's (child socket mode,
	// steered).
	fdPerSlotMaster = 1
	// fdGenerations is how many generations run at once: during a
	// reload, the serving one and the new one.
	fdGenerations = 2
)

// fdsNeeded is how many descriptors the master needs open at once to run
// cfg: its own, a full connection cap on each of its servers, and each
// child of two generations of cfg.Workers (a reload).
func fdsNeeded(cfg Config) int {
	perSlot := fdPerChild
	if cfg.ChildOutput == OutputPrefix {
		perSlot += fdPerChildPrefix
	}
	// A slot's socket of each listener in master socket mode; in child
	// socket mode with steering, the master's copy of its child's first
	// TCP listener.
	switch {
	case cfg.Sockets == SocketsMaster:
		perSlot += fdPerSlotMaster * max(len(cfg.Listen), 1)
	case cfg.Steer != SteerOff:
		perSlot += fdPerSlotMaster
	}
	n := fdBase + fdGenerations*cfg.Workers*perSlot
	if cfg.Metrics != "" {
		n += MetricsConnCap
	}
	if cfg.Control != "" {
		n += ControlConnCap
	}
	return n
}

// checkFDs refuses cfg when the master's descriptor limit is below what
// it needs. Read after the Go runtime has raised the soft limit to the
// hard one, as it does at start.
func checkFDs(cfg Config) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil // nothing to compare with; the spawns will say
	}
	return fitFDs(fdsNeeded(cfg), rl.Cur)
}

// fitFDs is checkFDs with the figures given.
func fitFDs(need int, limit uint64) error {
	if limit == unix.RLIM_INFINITY || uint64(need) <= limit {
		return nil
	}
	return fmt.Errorf("needs %d file descriptors, the limit is %d (ulimit -n): raise it (systemd: LimitNOFILE=), "+
		"or lower --workers; the connection caps of --metrics and --control count %d and %d of them (\"\" turns either off)",
		need, limit, MetricsConnCap, ControlConnCap)
}
