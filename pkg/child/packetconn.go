package child

import (
	"net"
	"net/netip"

	"github.com/prefork/prefork/pkg/counters"
)

// PacketConn is a UDP listener from ListenPacket: a *net.UDPConn whose
// read methods count every datagram they return on the master's counters
// page, in the datagram total and in the listener's own counter. Counting
// is one atomic add per counter: no syscall, lock or allocation.
//
// Every read method of *net.UDPConn is overridden (Read, ReadFrom,
// ReadFromUDP, ReadFromUDPAddrPort, ReadMsgUDP, ReadMsgUDPAddrPort), so a
// server that type-asserts ListenPacket's result to *PacketConn for the
// UDP-specific methods is counted too; a read through the embedded
// UDPConn field is not. A read counts when it returns no error, whatever
// the datagram's length (an empty datagram is one). Writes, deadlines
// and Close are the UDPConn's own.
type PacketConn struct {
	*net.UDPConn
	counter *counters.Counter // nil without a page
	index   int               // the listener's counter
}

// count counts one datagram read, when err is nil and there is a page.
func (c *PacketConn) count(err error) {
	if err == nil && c.counter != nil {
		c.counter.Datagram(c.index)
	}
}

// Read reads one datagram's payload and counts it.
func (c *PacketConn) Read(b []byte) (int, error) {
	n, err := c.UDPConn.Read(b)
	c.count(err)
	return n, err
}

// ReadFrom reads one datagram and counts it (net.PacketConn).
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(b)
	c.count(err)
	return n, addr, err
}

// ReadFromUDP reads one datagram and counts it.
func (c *PacketConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	n, addr, err := c.UDPConn.ReadFromUDP(b)
	c.count(err)
	return n, addr, err
}

// ReadFromUDPAddrPort reads one datagram and counts it; like the
// UDPConn's, it allocates nothing.
func (c *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, addr, err := c.UDPConn.ReadFromUDPAddrPort(b)
	c.count(err)
	return n, addr, err
}

// ReadMsgUDP reads one datagram with its out-of-band data and counts it.
func (c *PacketConn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, oobn, flags, addr, err = c.UDPConn.ReadMsgUDP(b, oob)
	c.count(err)
	return n, oobn, flags, addr, err
}

// ReadMsgUDPAddrPort reads one datagram with its out-of-band data and
// counts it.
func (c *PacketConn) ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error) {
	n, oobn, flags, addr, err = c.UDPConn.ReadMsgUDPAddrPort(b, oob)
	c.count(err)
	return n, oobn, flags, addr, err
}
