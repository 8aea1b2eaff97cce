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
	blocked, err = probeBind(addr, unix.SOCK_STREAM, unix.SO_REUSEADDR, unix.SO_REUSEPORT)
	if err != nil {
		return nil, false, fmt.Errorf("probe %s: %w", addr, err)
	}
	ls, err := Listeners(addr)
	if err != nil {
		return nil, blocked, err
	}
	holders, err = holdersOf(ls)
	return holders, blocked, err
}

// PacketAddressInUse is AddressInUse for UDP. It probes addr as a new
// child would bind it: a UDP socket with SO_REUSEPORT (and without
// SO_REUSEADDR, as sockopt.PacketControl and ListenPacketFD bind), closed
// at once. blocked is true when the bind fails with EADDRINUSE: a socket
// on the address lacks SO_REUSEPORT or belongs to another user than the
// caller. holders are the pids holding the UDP sockets bound to addr or
// to a wildcard that covers it, connected ones included (a client's
// socket on the port blocks a bind as much as a server's), sorted.
//
// Unlike a TCP probe, which never listens and so never joins its group,
// a UDP socket is in its reuseport group from bind to close: for those
// few microseconds it takes its share of the datagrams sent to the
// group, and they are lost with it. Call it when a bind has failed, not
// on every poll.
func PacketAddressInUse(addr netip.AddrPort) (holders []int, blocked bool, err error) {
	blocked, err = probeBind(addr, unix.SOCK_DGRAM, unix.SO_REUSEPORT)
	if err != nil {
		return nil, false, fmt.Errorf("probe udp %s: %w", addr, err)
	}
	ls, err := sockets(addr, unix.IPPROTO_UDP, 1<<tcpClose|1<<tcpEstablished)
	if err != nil {
		return nil, blocked, fmt.Errorf("udp sockets on %s: %w", addr, err)
	}
	holders, err = holdersOf(ls)
	return holders, blocked, err
}

// holdersOf returns the pids holding one of the sockets ls (Holders);
// none for none.
func holdersOf(ls []Listener) ([]int, error) {
	if len(ls) == 0 {
		return nil, nil
	}
	return Holders(inodesOf(ls))
}

// probeBind binds a socket of sotype (SOCK_STREAM for TCP, SOCK_DGRAM for
// UDP) with the SOL_SOCKET options opts set to addr, and closes it;
// blocked reports EADDRINUSE.
func probeBind(addr netip.AddrPort, sotype int, opts ...int) (blocked bool, err error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return false, err
	}
	fd, err := unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	for _, opt := range opts {
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
