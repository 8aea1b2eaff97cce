//go:build !linux

package proctree

import (
	"errors"
	"fmt"
	"net/netip"
)

// errUnsupported is what every function returns off Linux: the package
// reads Linux's /proc and NETLINK_SOCK_DIAG.
var errUnsupported = fmt.Errorf("proctree: %w on this operating system", errors.ErrUnsupported)

// Members is Linux-only; elsewhere it always fails.
func Members(root int, cgroupDir string) ([]int, error) { return nil, errUnsupported }

// InodeOf is Linux-only; elsewhere it always fails.
func InodeOf(fd int) (uint64, error) { return 0, errUnsupported }

// Listeners is Linux-only; elsewhere it always fails.
func Listeners(addr netip.AddrPort) ([]Listener, error) { return nil, errUnsupported }

// PacketListeners is Linux-only; elsewhere it always fails.
func PacketListeners(addr netip.AddrPort) ([]Listener, error) { return nil, errUnsupported }

// BoundOn is Linux-only; elsewhere it always fails.
func BoundOn(pids []int, addr netip.AddrPort) (bool, error) { return false, errUnsupported }

// ListensOn is Linux-only; elsewhere it always fails.
func ListensOn(pids []int, addr netip.AddrPort) (bool, error) { return false, errUnsupported }

// WaitsOn is Linux-only; elsewhere it always fails.
func WaitsOn(pids []int, inode uint64) (bool, error) { return false, errUnsupported }

// Holders is Linux-only; elsewhere it always fails.
func Holders(inodes []uint64) ([]int, error) { return nil, errUnsupported }

// AddressInUse is Linux-only; elsewhere it always fails.
func AddressInUse(addr netip.AddrPort) (holders []int, blocked bool, err error) {
	return nil, false, errUnsupported
}

// PacketAddressInUse is Linux-only; elsewhere it always fails.
func PacketAddressInUse(addr netip.AddrPort) (holders []int, blocked bool, err error) {
	return nil, false, errUnsupported
}

// TakePacket is Linux-only; elsewhere it always fails.
func TakePacket(pids []int, addr netip.AddrPort) (fd int, inode uint64, err error) {
	return -1, 0, errUnsupported
}

// TakeListener is Linux-only; elsewhere it always fails.
func TakeListener(pids []int, addr netip.AddrPort) (fd int, inode uint64, err error) {
	return -1, 0, errUnsupported
}
