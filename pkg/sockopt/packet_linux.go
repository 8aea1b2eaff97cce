package sockopt

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenPacketFD binds a UDP socket on address (host:port, no scheme) as
// ListenPacket does (SO_REUSEPORT before bind, SO_BROADCAST, IPv4 for an
// IPv4 address, a dual-stack IPv6 socket for a wildcard one) and returns
// it as a bare descriptor, non-blocking and close-on-exec. It is ListenFD
// for datagrams: the master holds it for a slot's children to read, and
// never reads it itself (Go's netpoller would wake the holder at every
// datagram). The caller owns the descriptor and closes it with
// unix.Close, once.
//
// Unlike a TCP socket, which joins its reuseport group at listen, a UDP
// socket is in its group, and takes its share of the datagrams, from the
// moment it is bound: a datagram the kernel gives it waits in its receive
// buffer until someone reads it, and is lost when the socket closes.
//
// The bind fails with EADDRINUSE while the address has a socket bound
// without SO_REUSEPORT, or a reuseport group of another owner (uid).
// Without SO_REUSEADDR on purpose (see PacketControl): for UDP it lets
// any user's socket with SO_REUSEADDR bind beside the group and take
// every datagram.
func ListenPacketFD(address string) (int, error) {
	fd, family, sa, err := newSocket("udp", address)
	if err != nil {
		return -1, fmt.Errorf("listen on udp %s: %w", address, err)
	}
	if err := setupPacket(fd, family, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen on udp %s: %w", address, err)
	}
	return fd, nil
}

// setupPacket sets the options of a new UDP socket and binds it.
func setupPacket(fd, family int, sa unix.Sockaddr) error {
	if err := dualStack(fd, family); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", err)
	}
	// As Go does for every UDP socket, so that a child reading the
	// socket as its own may answer to a broadcast address.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
		return fmt.Errorf("set SO_BROADCAST: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// PacketControl is the Control function of a UDP socket of a reuseport
// group: it sets SO_REUSEPORT before bind, and not SO_REUSEADDR, which
// Control sets for TCP. For UDP, SO_REUSEADDR has nothing to do with
// TIME_WAIT: it lets any two sockets that both have it bind one address
// (for multicast), whatever their owners, and the kernel then gives
// unicast datagrams to one of them, for IPv4 the one bound last (or its
// reuseport group). Measured on Linux 6.18: beside a group of two sockets
// with both options, a socket of another user with both bound, then a
// second one of that user with SO_REUSEPORT alone (the kernel's check
// stops at the first socket of the same owner), and the two took all 200
// datagrams sent, the group none. Without SO_REUSEADDR in the group, the
// first of those binds fails.
func PacketControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEPORT on %s: %w", address, serr)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// dualStack clears IPV6_V6ONLY on an IPv6 socket, as Go does for a
// "tcp" or "udp" socket: a wildcard one then takes IPv4 too.
func dualStack(fd, family int) error {
	if family != unix.AF_INET6 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return fmt.Errorf("set IPV6_V6ONLY: %w", err)
	}
	return nil
}

// CheckFreePacket is CheckFree for UDP: it reports an error when address
// already has a UDP socket bound on it (or on an address that overlaps,
// as a wildcard does), which a new reuseport group would share or fight
// over. It binds a UDP socket of the family ListenPacketFD would make,
// without SO_REUSEADDR or SO_REUSEPORT, and closes it: the kernel refuses
// that bind while any socket is bound there, whatever its options or
// owner. A connected UDP socket (a client's) bound to the port counts
// too. Call it before the group's first member binds, so that children
// never silently join a stranger's group. The error wraps
// unix.EADDRINUSE and says the address is in use.
func CheckFreePacket(address string) error {
	fd, family, sa, err := newSocket("udp", address)
	if err != nil {
		return fmt.Errorf("check udp %s: %w", address, err)
	}
	defer unix.Close(fd)
	if err := dualStack(fd, family); err != nil {
		return fmt.Errorf("check udp %s: %w", address, err)
	}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) {
		return fmt.Errorf("udp %s is already in use by another program or socket: %w", address, unix.EADDRINUSE)
	}
	if err != nil {
		return fmt.Errorf("check udp %s: bind: %w", address, err)
	}
	return nil
}

// ReceiveQueue returns the bytes held in the receive buffer of socket fd:
// for UDP, the datagrams received and not yet read, each counted at the
// memory the kernel charges it (its truesize: payload plus buffer
// overhead, about 1 KiB or more for a small datagram on loopback), the
// figure /proc/net/udp shows as rx_queue and that the socket's SO_RCVBUF
// caps. It reads SK_MEMINFO_RMEM_ALLOC, the first u32 of SO_MEMINFO
// (Linux 4.6), in one system call that takes no lock on the socket, so it
// can be read at every scrape. Reading the datagrams brings it back to 0.
func ReceiveQueue(fd int) (bytes uint32, err error) {
	// The kernel copies as much of its u32 array as the buffer holds, so
	// a 4-byte int receives element 0, SK_MEMINFO_RMEM_ALLOC.
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MEMINFO)
	if err != nil {
		return 0, fmt.Errorf("receive queue of fd %d: %w", fd, err)
	}
	return uint32(n), nil
}
