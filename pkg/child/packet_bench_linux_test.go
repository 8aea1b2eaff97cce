package child

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// BenchmarkReadUDP compares the UDP read path of a plain reuseport
// *net.UDPConn with that of a PacketConn counting on a counter page: one
// loopback datagram sent and read per op, through ReadFromUDPAddrPort
// (which allocates nothing) and ReadFrom (net.PacketConn's). Compare the
// ns/op of plain and counting of one run (the counting costs one atomic
// add per counter, no allocation):
//
//	go test -run '^$' -bench ReadUDP -count 10 ./pkg/child/
func BenchmarkReadUDP(b *testing.B) {
	page, err := counters.NewPage()
	if err != nil {
		b.Fatal(err)
	}
	defer page.Close()
	fd, err := unix.Dup(page.FD())
	if err != nil {
		b.Fatal(err)
	}
	counter, err := counters.OpenCounter(fd)
	if err != nil {
		b.Fatal(err)
	}
	defer counter.Close()
	reads := []struct {
		name string
		read func(pc net.PacketConn, buf []byte) error
	}{
		{"AddrPort", func(pc net.PacketConn, buf []byte) error {
			_, _, err := pc.(interface {
				ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
			}).ReadFromUDPAddrPort(buf)
			return err
		}},
		{"ReadFrom", func(pc net.PacketConn, buf []byte) error {
			_, _, err := pc.ReadFrom(buf)
			return err
		}},
	}
	for _, r := range reads {
		for _, counted := range []bool{false, true} {
			name := r.name + "/plain"
			if counted {
				name = r.name + "/counting"
			}
			b.Run(name, func(b *testing.B) {
				lc := sockopt.ListenConfig()
				raw, err := lc.ListenPacket(context.Background(), "udp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer raw.Close()
				var pc net.PacketConn = raw
				if counted {
					pc = &PacketConn{UDPConn: raw.(*net.UDPConn), counter: counter, index: 1}
				}
				client := dialUDP(b, pc)
				msg, buf := []byte("datagram"), make([]byte, 64)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := client.Write(msg); err != nil {
						b.Fatal(err)
					}
					if err := r.read(pc, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
