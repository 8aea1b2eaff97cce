package supervisor

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// PeerCred returns the uid and pid of the process at the other end of a
// unix socket connection, as the kernel recorded them (SO_PEERCRED): for
// an accepted connection, the client's at connect; for a dialled one,
// the server's at listen. They cannot be forged by the peer.
func PeerCred(c net.Conn) (uid, pid int, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0, errors.New("peer credentials: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", serr)
	}
	return int(cred.Uid), int(cred.Pid), nil
}
