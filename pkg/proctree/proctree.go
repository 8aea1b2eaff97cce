package proctree

import "net/netip"

// Listener is a TCP socket in LISTEN state (Listeners), or a UDP socket
// bound and not connected (PacketListeners), as NETLINK_SOCK_DIAG reports
// it.
type Listener struct {
	// Addr is the bound address. An IPv6 socket bound to an IPv4-mapped
	// address keeps the mapped form (::ffff:a.b.c.d).
	Addr netip.AddrPort
	// Inode is the socket's inode, the N of the "socket:[N]" link that
	// names it in /proc/PID/fd.
	Inode uint64
	// UID is the owner: the user the socket was created by. The kernel
	// lets a SO_REUSEPORT socket share a port only with sockets of the
	// same owner.
	UID uint32
	// V6Only is IPV6_V6ONLY of an IPv6 listener; false for IPv4 ones. An
	// IPv6 wildcard listener without it also takes IPv4 connections.
	V6Only bool
}

// Accepts reports whether l takes connections (for a UDP socket,
// datagrams) addressed to addr: same
// port, and either the same address or a wildcard that covers it (0.0.0.0
// for IPv4; :: for IPv6, and for IPv4 too unless V6Only). Zones are
// ignored, and IPv4-mapped IPv6 addresses compare as IPv4.
func (l Listener) Accepts(addr netip.AddrPort) bool {
	if l.Addr.Port() != addr.Port() {
		return false
	}
	bound := l.Addr.Addr().Unmap().WithZone("")
	want := addr.Addr().Unmap().WithZone("")
	switch {
	case bound == want:
		return true
	case !bound.IsUnspecified():
		return false
	case bound.Is4():
		return want.Is4()
	default: // ::
		return want.Is6() || !l.V6Only
	}
}
