package child

import (
	"context"
	"net"
	"testing"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// BenchmarkAccept compares the accept throughput of a plain reuseport
// listener with that of the counting listener on a counter page: one
// loopback connection made and accepted per op. Compare the two ns/op of
// one run (the counting costs one atomic add).
func BenchmarkAccept(b *testing.B) {
	page, err := counters.NewPage()
	if err != nil {
		b.Fatal(err)
	}
	defer page.Close()
	for _, counted := range []bool{false, true} {
		name := "plain"
		if counted {
			name = "counting"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := sockopt.Listen(context.Background(), "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			if counted {
				fd, err := unix.Dup(page.FD())
				if err != nil {
					b.Fatal(err)
				}
				c, err := counters.OpenCounter(fd)
				if err != nil {
					b.Fatal(err)
				}
				ln = &countingListener{Listener: ln, counter: c}
			}
			addr := ln.Addr().String()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
				c.Close()
			}
		})
	}
}
