//go:build !linux

package sockopt

import "syscall"

// Control is a net.ListenConfig Control function; prefork's socket sharing
// is Linux-only, so elsewhere it always fails.
func Control(network, address string, c syscall.RawConn) error {
	return ErrUnsupported
}

// CheckFree is Linux-only; elsewhere it always fails.
func CheckFree(address string) error { return ErrUnsupported }

// ListenFD is Linux-only; elsewhere it always fails.
func ListenFD(address string) (int, error) { return -1, ErrUnsupported }

// ReserveFD is Linux-only; elsewhere it always fails.
func ReserveFD(address string) (int, error) { return -1, ErrUnsupported }
