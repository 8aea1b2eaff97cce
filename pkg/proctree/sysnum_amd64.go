//go:build linux && amd64

package proctree

import "golang.org/x/sys/unix"

// waitCalls are the x86-64 system calls a thread waits for a connection
// or a datagram in, other than epoll_wait (see waitKind).
var waitCalls = map[int64]waitKind{
	unix.SYS_ACCEPT:   waitAccept,
	unix.SYS_ACCEPT4:  waitAccept,
	unix.SYS_READ:     waitRead,
	unix.SYS_RECVFROM: waitRead,
	unix.SYS_RECVMSG:  waitRead,
	unix.SYS_RECVMMSG: waitRead,
	unix.SYS_POLL:     waitPoll,
	unix.SYS_PPOLL:    waitPoll,
	unix.SYS_SELECT:   waitSelect,
	unix.SYS_PSELECT6: waitSelect,
}
