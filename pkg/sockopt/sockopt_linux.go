package sockopt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
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

// ListenFD binds a listening TCP socket on address as Listen does (plain
// TCP, SO_REUSEADDR and SO_REUSEPORT before bind, IPv4 for an IPv4
// address, a dual-stack IPv6 socket for a wildcard one, the backlog of
// net.core.somaxconn) and returns it as a bare descriptor, non-blocking
// and close-on-exec. Nothing polls it: it is for a process that holds a
// listener for others to accept on, and never accepts itself (Listen
// would put it in Go's netpoller, which wakes the holder at every
// incoming connection). The caller owns the descriptor and closes it
// with unix.Close, once; wrapping it in an *os.File would give it a
// second owner (a finalizer).
func ListenFD(address string) (int, error) {
	fd, err := listenFD(address)
	if err != nil {
		return -1, fmt.Errorf("listen on %s: %w", address, err)
	}
	return fd, nil
}

func listenFD(address string) (int, error) {
	fd, family, sa, err := newSocket("tcp", address)
	if err != nil {
		return -1, err
	}
	if err := setupListener(fd, family, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// newSocket makes the socket, not yet bound, that Go's own Listen
// ("tcp") or ListenPacket ("udp") would make for address, non-blocking
// and close-on-exec, and returns it with its family and the address to
// bind.
func newSocket(network, address string) (int, int, unix.Sockaddr, error) {
	ta, sotype, proto, err := resolve(network, address)
	if err != nil {
		return -1, 0, nil, err
	}
	family, sa, err := sockaddr(ta)
	if err != nil {
		return -1, 0, nil, err
	}
	fd, err := unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if errors.Is(err, unix.EAFNOSUPPORT) && family == unix.AF_INET6 && (ta.IP == nil || ta.IP.To4() != nil) {
		// An IPv4 or empty wildcard on a kernel without IPv6.
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: ta.Port}
		fd, err = unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	}
	if err != nil {
		return -1, 0, nil, fmt.Errorf("socket: %w", err)
	}
	return fd, family, sa, nil
}

// resolve resolves address for network ("tcp" or "udp"; the two differ
// in the service names a port may be given as) and returns it with the
// socket type and protocol to make. A UDP address is returned as a
// TCPAddr, which holds the same fields, for sockaddr.
func resolve(network, address string) (*net.TCPAddr, int, int, error) {
	if network == "udp" {
		ua, err := net.ResolveUDPAddr("udp", address)
		if err != nil {
			return nil, 0, 0, err
		}
		return &net.TCPAddr{IP: ua.IP, Port: ua.Port, Zone: ua.Zone}, unix.SOCK_DGRAM, unix.IPPROTO_UDP, nil
	}
	ta, err := net.ResolveTCPAddr("tcp", address)
	if err != nil {
		return nil, 0, 0, err
	}
	return ta, unix.SOCK_STREAM, unix.IPPROTO_TCP, nil
}

// ReserveFD binds a TCP socket on address with SO_REUSEPORT and without
// SO_REUSEADDR, does not listen, and returns it as a bare descriptor,
// close-on-exec, which the caller closes with unix.Close. While it is
// open, the kernel lets only sockets of the same owner (the uid that
// made it) bind the address, and those only with SO_REUSEPORT; it joins
// no accept group (a group forms at listen) and takes no connection. It
// holds an address for a group whose listeners come and go. Without
// SO_REUSEADDR on purpose: between a bound socket that does not listen
// and a new one, both with SO_REUSEADDR, Linux lets any user bind and
// listen.
func ReserveFD(address string) (int, error) {
	fd, family, sa, err := newSocket("tcp", address)
	if err != nil {
		return -1, fmt.Errorf("reserve %s: %w", address, err)
	}
	if err := reserve(fd, family, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("reserve %s: %w", address, err)
	}
	return fd, nil
}

func reserve(fd, family int, sa unix.Sockaddr) error {
	if err := dualStack(fd, family); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// setupListener sets the options of a new listening socket, binds and
// listens.
func setupListener(fd, family int, sa unix.Sockaddr) error {
	// As Go does for every IPv6 listener: IPv4 connections too.
	if err := dualStack(fd, family); err != nil {
		return err
	}
	if err := setReuse(fd); err != nil {
		return err
	}
	// The kernel copies TCP_NODELAY from a listener to the connections
	// it accepts. Go sets it on each connection anyway; a server that
	// takes the socket as fd 3 may not (uvicorn's --fd wraps it as a
	// unix socket, and asyncio then leaves Nagle on: 44 ms a keep-alive
	// request instead of 0.2 ms).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, listenBacklog()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// setReuse sets SO_REUSEADDR and SO_REUSEPORT, as Control does.
func setReuse(fd int) error {
	for _, opt := range []struct {
		name string
		opt  int
	}{{"SO_REUSEADDR", unix.SO_REUSEADDR}, {"SO_REUSEPORT", unix.SO_REUSEPORT}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.opt, 1); err != nil {
			return fmt.Errorf("set %s: %w", opt.name, err)
		}
	}
	return nil
}

// sockaddr returns the address family and socket address Go's own Listen
// would bind for ta: a wildcard (no IP, 0.0.0.0 or ::) is a dual-stack
// IPv6 socket, an IPv4 address an IPv4 one.
func sockaddr(ta *net.TCPAddr) (int, unix.Sockaddr, error) {
	if ta.IP == nil || ta.IP.IsUnspecified() {
		return unix.AF_INET6, &unix.SockaddrInet6{Port: ta.Port}, nil
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return unix.AF_INET, &unix.SockaddrInet4{Port: ta.Port, Addr: [4]byte(ip4)}, nil
	}
	sa := &unix.SockaddrInet6{Port: ta.Port, Addr: [16]byte(ta.IP.To16())}
	if ta.Zone != "" {
		ifi, err := net.InterfaceByName(ta.Zone)
		if err != nil {
			n, aerr := strconv.Atoi(ta.Zone)
			if aerr != nil {
				return 0, nil, fmt.Errorf("zone %q: %w", ta.Zone, err)
			}
			ifi = &net.Interface{Index: n}
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return unix.AF_INET6, sa, nil
}

// listenBacklog is the backlog Go's Listen uses: net.core.somaxconn, to
// which the kernel caps any larger one.
func listenBacklog() int {
	data, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return unix.SOMAXCONN
	}
	return parseBacklog(data)
}

// parseBacklog parses the contents of /proc/sys/net/core/somaxconn; an
// unreadable or zero value gives unix.SOMAXCONN, as in Go.
func parseBacklog(data []byte) int {
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return n
}
