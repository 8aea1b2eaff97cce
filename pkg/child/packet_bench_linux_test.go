package child

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// udpReader is what the benchmark reads through: both *net.UDPConn and
// *PacketConn, so every variant pays the same indirect call.
type udpReader interface {
	net.PacketConn
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
}

// BenchmarkReadUDP compares the UDP read path of a plain reuseport
// *net.UDPConn ("plain") with that of a PacketConn counting on a counter
// page ("counting"), and of a PacketConn without a page ("wrapped", the
// wrapper's cost alone): one loopback datagram sent and read per op,
// through ReadFromUDPAddrPort (which allocates nothing) and ReadFrom
// (net.PacketConn's, which allocates the address). Counting costs two
// atomic adds (total and listener) and no allocation; compare the
// medians of many runs, the variants interleaved:
//
//	go test -run '^$' -bench ReadUDP -count 10 -benchtime 200000x ./pkg/child/
func BenchmarkReadUDP(b *testing.B) {
	counter := benchCounter(b)
	reads := []struct {
		name string
		read func(r udpReader, buf []byte) error
	}{
		{"AddrPort", func(r udpReader, buf []byte) error {
			_, _, err := r.ReadFromUDPAddrPort(buf)
			return err
		}},
		{"ReadFrom", func(r udpReader, buf []byte) error {
			_, _, err := r.ReadFrom(buf)
			return err
		}},
	}
	variants := []struct {
		name string
		wrap func(*net.UDPConn) udpReader
	}{
		{"plain", func(c *net.UDPConn) udpReader { return c }},
		{"wrapped", func(c *net.UDPConn) udpReader { return &PacketConn{UDPConn: c} }},
		{"counting", func(c *net.UDPConn) udpReader { return &PacketConn{UDPConn: c, counter: counter, index: 1} }},
	}
	// One socket and client for every variant: sockets differ from one
	// another (their port's hash, the CPU of their softirq) by more than
	// the counting costs.
	lc := sockopt.ListenConfig()
	raw, err := lc.ListenPacket(context.Background(), "udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	client := dialUDP(b, raw)
	for _, r := range reads {
		for _, v := range variants {
			b.Run(r.name+"/"+v.name, func(b *testing.B) {
				conn := v.wrap(raw.(*net.UDPConn))
				msg, buf := []byte("datagram"), make([]byte, 64)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := client.Write(msg); err != nil {
						b.Fatal(err)
					}
					if err := r.read(conn, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkReadUDPPaired measures the counting overhead on the UDP read
// path with the noise of a shared machine cancelled: every op sends and
// reads two datagrams on one socket, one through the plain *net.UDPConn
// and one through a PacketConn ("counting" on a page, or "wrapped"
// without one: the wrapper's cost alone), each timed, in an order that
// alternates. It reports the mean of each and overhead-% = measured over
// plain, less one, in percent:
//
//	go test -run '^$' -bench ReadUDPPaired -count 10 -benchtime 200000x ./pkg/child/
func BenchmarkReadUDPPaired(b *testing.B) {
	counter := benchCounter(b)
	lc := sockopt.ListenConfig()
	raw, err := lc.ListenPacket(context.Background(), "udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	client := dialUDP(b, raw)
	for _, v := range []struct {
		name    string
		counter *counters.Counter
	}{{"counting", counter}, {"wrapped", nil}} {
		b.Run(v.name, func(b *testing.B) {
			conns := [2]udpReader{raw.(*net.UDPConn), &PacketConn{UDPConn: raw.(*net.UDPConn), counter: v.counter, index: 1}}
			pairedReads(b, client, conns)
		})
	}
}

// pairedReads is the loop of BenchmarkReadUDPPaired: conns[0] is the
// plain conn, conns[1] the one measured against it.
func pairedReads(b *testing.B, client *net.UDPConn, conns [2]udpReader) {
	msg, buf := []byte("datagram"), make([]byte, 64)
	var spent [2]time.Duration // plain, measured
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for k := range 2 {
			which := (i + k) % 2
			start := time.Now()
			if _, err := client.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := conns[which].ReadFromUDPAddrPort(buf); err != nil {
				b.Fatal(err)
			}
			spent[which] += time.Since(start)
		}
		i++
	}
	plain, measured := float64(spent[0])/float64(b.N), float64(spent[1])/float64(b.N)
	b.ReportMetric(plain, "ns/plain")
	b.ReportMetric(measured, "ns/measured")
	b.ReportMetric(100*(measured/plain-1), "overhead-%")
}

// benchCounter returns a child's side of a new counter page, both closed
// when b ends.
func benchCounter(b *testing.B) *counters.Counter {
	page, err := counters.NewPage()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { page.Close() })
	fd, err := unix.Dup(page.FD())
	if err != nil {
		b.Fatal(err)
	}
	counter, err := counters.OpenCounter(fd)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { counter.Close() })
	return counter
}
