package sockopt

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestAcceptQueueFields(t *testing.T) {
	tests := []struct {
		name                 string
		info                 unix.TCPInfo
		wantQueued, wantBack uint32
		wantErr              error
	}{
		{name: "listener", info: unix.TCPInfo{State: tcpListen, Unacked: 3, Sacked: 4096}, wantQueued: 3, wantBack: 4096},
		{name: "empty listener", info: unix.TCPInfo{State: tcpListen, Sacked: 128}, wantBack: 128},
		{name: "established", info: unix.TCPInfo{State: 1, Unacked: 3, Sacked: 1}, wantErr: ErrNotListening},
		{name: "closed", info: unix.TCPInfo{State: 7}, wantErr: ErrNotListening},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, b, err := acceptQueue(&tt.info)
			if !errors.Is(err, tt.wantErr) || q != tt.wantQueued || b != tt.wantBack {
				t.Errorf("acceptQueue = %d, %d, %v; want %d, %d, %v", q, b, err, tt.wantQueued, tt.wantBack, tt.wantErr)
			}
		})
	}
}

// fdOf returns the descriptor of a listener or connection, without the
// dup that File() makes.
func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// waitQueued polls the accept queue of fd until it holds want connections:
// Dial returns when the client has the SYN-ACK, and the server queues the
// connection when the final ACK arrives, a moment later.
func waitQueued(t *testing.T, fd int, want uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, backlog, err := AcceptQueue(fd)
		if err != nil {
			t.Fatal(err)
		}
		if q == want {
			return backlog
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept queue = %d after 5s, want %d", q, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// For a TCP listener and for an MPTCP one (Go's default for a listener
// where the kernel has MPTCP, the master's sockets included), whose
// TCP_INFO the kernel answers for the TCP subflow listener that holds the
// queue.
func TestAcceptQueue(t *testing.T) {
	for _, mptcp := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "mptcp"}[mptcp]
		t.Run(name, func(t *testing.T) {
			var lc net.ListenConfig
			lc.SetMultipathTCP(mptcp)
			ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			fd := fdOf(t, ln.(*net.TCPListener))
			if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && mptcp && p != unix.IPPROTO_MPTCP {
				t.Skipf("the kernel made a protocol %d listener, not MPTCP", p)
			}
			testAcceptQueue(t, ln, fd)
		})
	}
}

func testAcceptQueue(t *testing.T, ln net.Listener, fd int) {
	backlog := waitQueued(t, fd, 0)
	// Go listens with net.core.somaxconn as the backlog (at most 65535),
	// and the kernel caps it there too.
	if data, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && backlog != uint32(min(n, 65535)) {
			t.Errorf("backlog = %d, want somaxconn %d", backlog, n)
		}
	}

	const k = 5
	for range k {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitQueued(t, fd, k)

	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitQueued(t, fd, k-1)

	// An accepted connection is not a listener.
	if _, _, err := AcceptQueue(fdOf(t, c.(*net.TCPConn))); !errors.Is(err, ErrNotListening) {
		t.Errorf("AcceptQueue of a connection = %v, want ErrNotListening", err)
	}
}

func TestAcceptQueueBadFD(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := AcceptQueue(int(f.Fd())); !errors.Is(err, unix.ENOTSOCK) {
		t.Errorf("AcceptQueue of /dev/null = %v, want ENOTSOCK", err)
	}
}
