package sockopt

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mustListenFD calls ListenFD and closes the descriptor when the test ends.
func mustListenFD(t *testing.T, address string) int {
	t.Helper()
	fd, err := ListenFD(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// localAddr returns the address fd is bound to.
func localAddr(t *testing.T, fd int) string {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), fmt.Sprint(sa.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), fmt.Sprint(sa.Port))
	}
	t.Fatalf("fd %d bound to %T", fd, sa)
	return ""
}

// ListenFD makes what Listen makes, as a bare descriptor: a plain TCP
// listener, non-blocking (children inherit the open file description and
// Go's FileListener expects it so, TRAPS 5), close-on-exec, in one
// reuseport group with Listen's listeners, with somaxconn as its backlog.
func TestListenFD(t *testing.T) {
	fd := mustListenFD(t, "127.0.0.1:0")
	addr := localAddr(t, fd)

	if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_TCP {
		t.Errorf("SO_PROTOCOL = %d (%v), want IPPROTO_TCP", p, err)
	}
	for _, opt := range []struct {
		name string
		opt  int
	}{{"SO_REUSEADDR", unix.SO_REUSEADDR}, {"SO_REUSEPORT", unix.SO_REUSEPORT}, {"SO_ACCEPTCONN", unix.SO_ACCEPTCONN}} {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt.opt); err != nil || v != 1 {
			t.Errorf("%s = %d (%v), want 1", opt.name, v, err)
		}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("file status flags %o (%v), want O_NONBLOCK", fl, err)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor flags %o (%v), want FD_CLOEXEC", fdfl, err)
	}
	_, backlog, err := AcceptQueue(fd)
	if err != nil || int(backlog) != listenBacklog() {
		t.Errorf("backlog %d (%v), want somaxconn %d", backlog, err, listenBacklog())
	}

	// One group with Listen's listeners; a plain listener cannot join.
	ln, err := Listen(context.Background(), addr)
	if err != nil {
		t.Fatalf("Listen on ListenFD's %s: %v", addr, err)
	}
	ln.Close()
	if c, err := net.Listen("tcp", addr); err == nil {
		c.Close()
		t.Errorf("a listener without SO_REUSEPORT joined the group on %s", addr)
	}

	// It listens: a connection waits in its queue.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitQueued(t, fd, 1)

	// What it accepts has TCP_NODELAY from it, whatever the program that
	// accepts does (uvicorn --fd leaves it to the kernel).
	if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v != 1 {
		t.Errorf("listener TCP_NODELAY = %d (%v), want 1", v, err)
	}
	conn, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	if v, err := unix.GetsockoptInt(conn, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v != 1 {
		t.Errorf("accepted connection's TCP_NODELAY = %d (%v), want 1", v, err)
	}
}

// A wildcard is one dual-stack IPv6 socket, as Go's Listen makes it, so
// that the master's listeners are where the children's own would be.
func TestListenFDWildcard(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := Listen(context.Background(), addr)
			if err != nil {
				t.Skipf("Listen(%s): %v", addr, err)
			}
			want := ln.(*net.TCPListener)
			wantFamily := family(t, fdOf(t, want))
			ln.Close()
			got := family(t, mustListenFD(t, addr))
			if got != wantFamily {
				t.Errorf("ListenFD(%s) family %d, Listen's %d", addr, got, wantFamily)
			}
		})
	}
}

func family(t *testing.T, fd int) int {
	t.Helper()
	d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestListenFDErrors(t *testing.T) {
	for _, addr := range []string{"no-port", "127.0.0.1:http-nonsense", "[fe80::1%no-such-if]:0"} {
		if fd, err := ListenFD(addr); err == nil {
			unix.Close(fd)
			t.Errorf("ListenFD(%q) = nil error", addr)
		}
	}
	// An address taken without SO_REUSEPORT.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fd, err := ListenFD(ln.Addr().String()); err == nil {
		unix.Close(fd)
		t.Errorf("ListenFD on %s, taken by a plain listener, = nil error", ln.Addr())
	}
}

func TestParseBacklog(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{name: "value", in: "4096\n", want: 4096},
		{name: "large", in: "200000\n", want: 200000},
		{name: "zero", in: "0\n", want: unix.SOMAXCONN},
		{name: "garbage", in: "x\n", want: unix.SOMAXCONN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseBacklog([]byte(tt.in)); got != tt.want {
				t.Errorf("parseBacklog(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}
