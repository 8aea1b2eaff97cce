//go:build linux && arm64

package proctree

import "golang.org/x/sys/unix"

// waitCalls are the arm64 system calls a thread waits for a connection
// or a datagram in, other than epoll_pwait (see waitKind). arm64 has no
// poll or select: libc implements them with ppoll and pselect6.
var waitCalls = map[int64]waitKind{
	unix.SYS_ACCEPT:   waitAccept,
	unix.SYS_ACCEPT4:  waitAccept,
	unix.SYS_READ:     waitRead,
	unix.SYS_RECVFROM: waitRead,
	unix.SYS_RECVMSG:  waitRead,
	unix.SYS_RECVMMSG: waitRead,
	unix.SYS_PPOLL:    waitPoll,
	unix.SYS_PSELECT6: waitSelect,
}
