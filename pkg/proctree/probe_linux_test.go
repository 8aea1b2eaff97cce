package proctree

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAddressInUse: a listener without SO_REUSEPORT blocks the address,
// one with it shares it, a free port is free.
func TestAddressInUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		listen      string // "": nothing listens on the probed port
		reusePort   bool
		probe       string // the address probed, on the listener's port
		wantBlocked bool
	}{
		{name: "plain", listen: "127.0.0.1:0", probe: "127.0.0.1", wantBlocked: true},
		{name: "plain wildcard", listen: "0.0.0.0:0", probe: "127.0.0.1", wantBlocked: true},
		{name: "SO_REUSEPORT", listen: "127.0.0.1:0", reusePort: true, probe: "127.0.0.1"},
		{name: "free", probe: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var port uint16
			if tt.listen == "" {
				port = freePort(t)
			} else {
				ln := listen(t, tt.listen, tt.reusePort)
				port = uint16(ln.Addr().(*net.TCPAddr).Port)
			}
			addr := netip.AddrPortFrom(netip.MustParseAddr(tt.probe), port)
			holders, blocked, err := AddressInUse(addr)
			if err != nil {
				t.Fatal(err)
			}
			if blocked != tt.wantBlocked {
				t.Errorf("AddressInUse(%s) blocked = %v; want %v", addr, blocked, tt.wantBlocked)
			}
			holding := slices.Contains(holders, os.Getpid())
			if holding != (tt.listen != "") {
				t.Errorf("AddressInUse(%s) holders = %v; want the test process (%d) in it: %v",
					addr, holders, os.Getpid(), tt.listen != "")
			}
		})
	}
}

// listen listens on address, with SO_REUSEPORT if reusePort, until the
// test ends.
func listen(t *testing.T, address string, reusePort bool) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
			return err
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp4", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}
