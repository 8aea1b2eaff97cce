package sockopt

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN of the kernel's enum (include/net/tcp_states.h),
// the value of tcpi_state for a listening socket.
const tcpListen = 10

// AcceptQueue reads the accept queue of the listening TCP socket fd through
// getsockopt(TCP_INFO): queued is the number of established connections
// waiting for accept(), backlog the most it may hold (listen()'s backlog,
// capped by net.core.somaxconn); the kernel drops SYNs once queued exceeds
// backlog. These are the Recv-Q and Send-Q that `ss -lt` shows. It costs one
// system call and no lock on the socket, so it can be read at every scrape.
// An MPTCP listener (what Go makes by default where the kernel has MPTCP)
// works too: the kernel answers for its TCP subflow listener, which holds
// the queue (tested on Linux 6.18).
func AcceptQueue(fd int) (queued, backlog uint32, err error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, fmt.Errorf("accept queue of fd %d: %w", fd, err)
	}
	queued, backlog, err = acceptQueue(info)
	if err != nil {
		return 0, 0, fmt.Errorf("accept queue of fd %d: %w", fd, err)
	}
	return queued, backlog, nil
}

// acceptQueue reads the accept queue out of a listener's TCP_INFO. For a
// socket in LISTEN, tcp_get_info (net/ipv4/tcp.c) fills two fields with
// other meanings and returns early: tcpi_unacked = sk_ack_backlog, the
// connections ready for accept(), and tcpi_sacked = sk_max_ack_backlog.
// In any other state they are the usual segment counts.
func acceptQueue(info *unix.TCPInfo) (queued, backlog uint32, err error) {
	if info.State != tcpListen {
		return 0, 0, fmt.Errorf("%w (tcpi_state %d)", ErrNotListening, info.State)
	}
	return info.Unacked, info.Sacked, nil
}
