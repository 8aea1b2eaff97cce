package proctree

import "errors"

// The errors of TakeListener, on every system so that callers can test
// for them with errors.Is.
var (
	// ErrNoListener: none of the processes holds a TCP listener that
	// takes connections addressed to the address (TakeListener), or an
	// unconnected UDP socket that takes its datagrams (TakePacket).
	ErrNoListener = errors.New("no listener on the address is held by the processes")
	// ErrManyListeners: the processes hold more than one listener on the
	// address, as a server does whose workers each bind their own
	// SO_REUSEPORT socket; which one to take is not for this package to
	// guess.
	ErrManyListeners = errors.New("more than one listener on the address is held by the processes")
	// ErrNotAllowed: the kernel refused to show or give a child's socket
	// to this process. The error wrapping it carries the errno too.
	ErrNotAllowed = errors.New("not allowed to take the child's socket " +
		"(reading /proc/PID/fd and pidfd_getfd need root or CAP_SYS_PTRACE, or the child's uid and a dumpable child: " +
		"a setuid/setcap program, or one that called prctl(PR_SET_DUMPABLE, 0), is not; " +
		"YAMA ptrace_scope 2 forbids it without CAP_SYS_PTRACE, 3 always; " +
		"a container's seccomp profile may refuse pidfd_getfd without CAP_SYS_PTRACE)")
)
