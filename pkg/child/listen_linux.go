package child

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errNotListening is returned for an inherited descriptor that is a
// socket but not one in listening state.
var errNotListening = errors.New("not a listening socket")

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
