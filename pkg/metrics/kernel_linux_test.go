package metrics

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// The real tables: a UDP socket on a loopback port, with datagrams waiting
// in its receive buffer, is found by inode with a queue of at least their
// payload, and listenerOf finds it among this process's descriptors.
func TestReceiveQueuesLive(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	port := conn.LocalAddr().(*net.UDPAddr).Port
	inode := socketInode(t, conn)

	queues, err := LinuxKernel.ReceiveQueues(port)
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := queues[inode]; !ok || q != 0 {
		t.Fatalf("queues on port %d = %v, want inode %d with 0 bytes", port, queues, inode)
	}

	client, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	const n, size = 4, 100
	for range n {
		if _, err := client.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	// Loopback delivers synchronously, but wait, bounded, rather than rely
	// on it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if queues, err = LinuxKernel.ReceiveQueues(port); err != nil {
			t.Fatal(err)
		}
		if queues[inode] >= n*size || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d datagrams of %d bytes: rx_queue %d bytes", n, size, queues[inode])
	if queues[inode] < n*size {
		t.Errorf("rx_queue %d bytes, want at least %d", queues[inode], n*size)
	}
	// The client's socket is connected (st 01) on another port: not there.
	if len(queues) != 1 {
		t.Errorf("queues on port %d = %v, want only inode %d", port, queues, inode)
	}
	if got, ok := LinuxKernel.ListenerOf(os.Getpid(), queues); !ok || got != inode {
		t.Errorf("ListenerOf(self) = %d, %v; want %d", got, ok, inode)
	}
}

// socketInode returns the inode of c's socket.
func socketInode(t *testing.T, c *net.UDPConn) uint64 {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var target string
	var lerr error
	if err := raw.Control(func(fd uintptr) {
		target, lerr = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	}); err != nil {
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	var inode uint64
	if _, err := fmt.Sscanf(target, "socket:[%d]", &inode); err != nil {
		t.Fatalf("%q: %v", target, err)
	}
	return inode
}
