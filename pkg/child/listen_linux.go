package child

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errNotListening is returned for an inherited descriptor that is a
// socket but not one in listening state.
var errNotListening = errors.New("not a listening socket")

// errNotDatagram is returned for an inherited descriptor that is a
// socket but not a datagram one.
var errNotDatagram = errors.New("not a datagram socket")

// checkListening makes sure fd is a listening socket before it is taken
// over, so a master that passes the wrong descriptor gets a clear error
// here rather than EINVAL from the first Accept.
func checkListening(fd int) error {
	on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("check SO_ACCEPTCONN: %w", err)
	}
	if on == 0 {
		return errNotListening
	}
	return nil
}

// checkDatagram makes sure fd is a datagram socket before it is taken
// over as a packet listener.
func checkDatagram(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("check SO_TYPE: %w", err)
	}
	if typ != unix.SOCK_DGRAM {
		return errNotDatagram
	}
	return nil
}

// socketNetwork reads an inherited socket's type: netTCP for a stream
// socket, netUDP for a datagram one; other types and non-sockets are
// errors.
func socketNetwork(fd int) (string, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", fmt.Errorf("read SO_TYPE: %w", err)
	}
	switch typ {
	case unix.SOCK_STREAM:
		return netTCP, nil
	case unix.SOCK_DGRAM:
		return netUDP, nil
	}
	return "", fmt.Errorf("socket type %d: neither stream nor datagram", typ)
}

// closeOnExec keeps an inherited descriptor from the processes this one
// starts. A descriptor that is not open is left to fail when taken.
func closeOnExec(fd int) {
	unix.CloseOnExec(fd)
}
