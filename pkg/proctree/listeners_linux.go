package proctree

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// InodeOf returns the inode of the socket open at fd, the number that
// /proc/PID/fd links show as socket:[INODE] in every process holding it,
// whatever fd number each holds it under.
func InodeOf(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("inode of fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, fmt.Errorf("inode of fd %d: not a socket (mode %#o)", fd, st.Mode)
	}
	return st.Ino, nil
}

// Listeners returns the TCP sockets in LISTEN, in the caller's network
// namespace, that take connections addressed to addr (Listener.Accepts):
// those bound to addr itself and the wildcards that cover it. For an IPv4
// addr both families are asked, as a dual-stack IPv6 listener takes IPv4
// connections too.
func Listeners(addr netip.AddrPort) ([]Listener, error) {
	ls, err := sockets(addr, unix.IPPROTO_TCP, 1<<tcpListen)
	if err != nil {
		return nil, fmt.Errorf("listeners on %s: %w", addr, err)
	}
	return ls, nil
}

// PacketListeners returns the UDP sockets, in the caller's network
// namespace, that take datagrams addressed to addr from any sender: the
// unconnected ones (state TCP_CLOSE) bound to addr itself or to a
// wildcard that covers it (Listener.Accepts), as Listeners does for TCP.
// A connected UDP socket bound to the port takes only its peer's
// datagrams, as an accepted TCP connection does, and is left out.
func PacketListeners(addr netip.AddrPort) ([]Listener, error) {
	ls, err := sockets(addr, unix.IPPROTO_UDP, 1<<tcpClose)
	if err != nil {
		return nil, fmt.Errorf("udp sockets on %s: %w", addr, err)
	}
	return ls, nil
}

// sockets returns the sockets of protocol in one of states whose bound
// address covers addr (Listener.Accepts), from one sock_diag dump per
// family: AF_INET6 always, AF_INET too for an IPv4 addr.
func sockets(addr netip.AddrPort, protocol uint8, states uint32) ([]Listener, error) {
	families := []uint8{unix.AF_INET6}
	if addr.Addr().Unmap().Is4() {
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	var out []Listener
	for _, family := range families {
		all, err := dumpSockets(family, protocol, states)
		if err != nil {
			return nil, err
		}
		for _, l := range all {
			if l.Accepts(addr) {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// ListensOn reports whether one of pids holds open a TCP socket in LISTEN
// that takes connections addressed to addr (see Listeners): one sock_diag
// dump per address family, then a walk of each pid's /proc/PID/fd that
// stops at the first match. Holding is not waiting: the master, or a
// process that inherited the socket and ignores it, holds it too (see
// WaitsOn). A pid that exits meanwhile is skipped; an error is returned
// only if no pid matched and some could not be read.
func ListensOn(pids []int, addr netip.AddrPort) (bool, error) {
	ls, err := Listeners(addr)
	if err != nil || len(ls) == 0 {
		return false, err
	}
	held, err := holdsOneOf(pids, ls)
	if err != nil {
		return false, fmt.Errorf("listens on %s: %w", addr, err)
	}
	return held, nil
}

// BoundOn is ListensOn for UDP: it reports whether one of pids holds open
// an unconnected UDP socket that takes datagrams addressed to addr, bound
// to addr or to a wildcard that covers it (see PacketListeners). As for
// ListensOn, holding is not reading (see WaitsOn), a pid that exits is
// skipped, and an error is returned only if no pid matched and some could
// not be read.
func BoundOn(pids []int, addr netip.AddrPort) (bool, error) {
	ls, err := PacketListeners(addr)
	if err != nil || len(ls) == 0 {
		return false, err
	}
	held, err := holdsOneOf(pids, ls)
	if err != nil {
		return false, fmt.Errorf("bound on udp %s: %w", addr, err)
	}
	return held, nil
}

// holdsOneOf reports whether one of pids holds one of the sockets ls.
func holdsOneOf(pids []int, ls []Listener) (bool, error) {
	inodes := inodesOf(ls)
	var errs []error
	for _, pid := range pids {
		found, err := holdsAny(pid, inodes)
		if found {
			return true, nil
		}
		if err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	return false, errors.Join(errs...)
}

// inodesOf returns the inodes of ls.
func inodesOf(ls []Listener) []uint64 {
	inodes := make([]uint64, len(ls))
	for i, l := range ls {
		inodes[i] = l.Inode
	}
	return inodes
}

// Holders returns, sorted, the pids that hold open a socket with one of
// the inodes, from one scan of every /proc/PID/fd. A process that exits or
// cannot be read (another user's, for a master that is not root) is left
// out. A process forked by a holder and not yet past exec holds its
// parent's fds, those marked close-on-exec included, so it may be listed
// for a moment.
func Holders(inodes []uint64) ([]int, error) {
	var holders []int
	err := scanPids(func(pid int) bool {
		if found, _ := holdsAny(pid, inodes); found {
			holders = append(holders, pid)
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("holders: %w", err)
	}
	slices.Sort(holders)
	return holders, nil
}

// holdsAny reports whether pid holds open a socket with one of the
// inodes.
func holdsAny(pid int, inodes []uint64) (bool, error) {
	found := false
	err := scanFds(pid, func(_ int, link []byte) bool {
		ino, ok := parseSocketLink(link)
		found = ok && slices.Contains(inodes, ino)
		return found
	})
	return found, err
}
