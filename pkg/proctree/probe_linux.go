package proctree

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// AddressInUse probes addr as a new child would bind it: a TCP socket with
// SO_REUSEADDR and SO_REUSEPORT bound to addr, never listening, closed at
// once. blocked is true when the bind fails with EADDRINUSE: a socket on
// the address does not let the probe share it, because it lacks
// SO_REUSEPORT or belongs to another user than the caller (so a master
// running as root probes for root, not for the children's user). holders
// are the pids holding the listening sockets that take connections for
// addr (Listeners, then Holders), sorted, for the message that names the
// culprit; it may be empty, as when the address is taken by a socket that
// is bound but not listening. For the few microseconds it is bound, the
// probe itself takes a share of the port, which can fail the bind of a
// child of another user started at that moment.
func AddressInUse(addr netip.AddrPort) (holders []int, blocked bool, err error) {
	blocked, err = probeBind(addr)
	if err != nil {
		return nil, false, fmt.Errorf("probe %s: %w", addr, err)
	}
	ls, err := Listeners(addr)
	if err != nil {
		return nil, blocked, err
	}
	if len(ls) == 0 {
		return nil, blocked, nil
	}
	inodes := make([]uint64, len(ls))
	for i, l := range ls {
		inodes[i] = l.Inode
	}
	holders, err = Holders(inodes)
	return holders, blocked, err
}

// probeBind binds a SO_REUSEADDR+SO_REUSEPORT TCP socket to addr and
// closes it; blocked reports EADDRINUSE.
func probeBind(addr netip.AddrPort) (blocked bool, err error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return false, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return false, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			return false, fmt.Errorf("setsockopt: %w", err)
		}
	}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("bind: %w", err)
	}
	return false, nil
}

// sockaddr converts addr to the socket address and family a child would
// bind; an IPv4-mapped address binds as IPv4, as Go's net package does.
func sockaddr(addr netip.AddrPort) (unix.Sockaddr, int, error) {
	ip := addr.Addr()
	if ip.Unmap().Is4() {
		return &unix.SockaddrInet4{Port: int(addr.Port()), Addr: ip.Unmap().As4()}, unix.AF_INET, nil
	}
	if !ip.Is6() {
		return nil, 0, fmt.Errorf("invalid address %s", addr)
	}
	zone, err := zoneIndex(ip.Zone())
	if err != nil {
		return nil, 0, err
	}
	return &unix.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16(), ZoneId: zone}, unix.AF_INET6, nil
}

// zoneIndex returns the interface index of an IPv6 zone, given as a name
// or a number; 0 for none.
func zoneIndex(zone string) (uint32, error) {
	if zone == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}
