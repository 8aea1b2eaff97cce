package sockopt

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// Listen makes plain TCP listeners even where the kernel enables MPTCP,
// which Go would otherwise use: steering cannot attach to MPTCP ones.
func TestListenIsPlainTCP(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var serr error
	raw.Control(func(fd uintptr) { proto, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if serr != nil || proto != unix.IPPROTO_TCP {
		t.Errorf("listener protocol %d (%v), want IPPROTO_TCP (%d)", proto, serr, unix.IPPROTO_TCP)
	}
}
