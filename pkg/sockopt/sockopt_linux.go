package sockopt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Control is a net.ListenConfig Control function that sets SO_REUSEADDR and
// SO_REUSEPORT on the socket before it is bound.
func Control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEADDR on %s: %w", address, serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEPORT on %s: %w", address, serr)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// CheckFree reports an error when address already has a listener that a
// new reuseport group could not share with: it binds and listens once
// without SO_REUSEPORT, which the kernel refuses while any socket listens on
// the address, reuseport or not. Call it before the group's first member
// binds, so that children never silently join a stranger's group.
func CheckFree(address string) error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// SO_REUSEADDR alone lets the probe ignore TIME_WAIT leftovers
			// of an earlier run, never a live listener.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", address)
	if errors.Is(err, unix.EADDRINUSE) {
		return fmt.Errorf("%s is already in use by another program: %w", address, unix.EADDRINUSE)
	}
	if err != nil {
		return err
	}
	return ln.Close()
}
