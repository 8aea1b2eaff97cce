package metrics

import (
	"fmt"
	"maps"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

const procNetUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
  117: 0100007F:14E9 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 4711 2 0000000000000000 0          
  117: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4712 2 0000000000000000 0          
  118: 0100007F:14EA 00000000:0000 07 00000000:00000900 00:00000000 00000000     0        0 4713 2 0000000000000000 0          
  117: 0100007F:14E9 0100007F:C350 01 00000000:00000500 00:00000000 00000000     0        0 4714 2 0000000000000000 0          
`

const procNetUDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  117: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 4715 2 0000000000000000 0
`

func TestParseReceiveQueues(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		port    int
		want    map[uint64]uint64
		wantErr bool
	}{
		// 5353 is 14E9: two sockets; 5354's and the connected socket's
		// (st 01) lines are not 5353's listeners.
		{name: "udp", in: procNetUDP, port: 5353, want: map[uint64]uint64{4711: 0x300, 4712: 0}},
		{name: "other port", in: procNetUDP, port: 5354, want: map[uint64]uint64{4713: 0x900}},
		{name: "none", in: procNetUDP, port: 53, want: map[uint64]uint64{}},
		{name: "udp6", in: procNetUDP6, port: 5353, want: map[uint64]uint64{4715: 0xA00}},
		{name: "header only", in: "  sl  local_address\n", port: 5353, want: map[uint64]uint64{}},
		{name: "empty", in: "", port: 5353, want: map[uint64]uint64{}},
		{name: "short line", in: "header\n 0: short\n", port: 5353, wantErr: true},
		{name: "bad queue field", in: "header\n 0: 0100007F:14E9 00000000:0000 07 00000300 00:0 0 0 0 4711\n", port: 5353, wantErr: true},
		{name: "bad rx_queue", in: "header\n 0: 0100007F:14E9 00000000:0000 07 0:zz 00:0 0 0 0 4711\n", port: 5353, wantErr: true},
		{name: "bad inode", in: "header\n 0: 0100007F:14E9 00000000:0000 07 0:1 00:0 0 0 0 x\n", port: 5353, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := map[uint64]uint64{}
			err := parseReceiveQueues([]byte(tt.in), tt.port, got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && !maps.Equal(got, tt.want) {
				t.Errorf("queues = %v, want %v", got, tt.want)
			}
		})
	}
}

// parseReceiveQueues never panics, and what it returns is of the port
// asked for.
func FuzzParseReceiveQueues(f *testing.F) {
	f.Add([]byte(procNetUDP), 5353)
	f.Add([]byte(procNetUDP6), 5353)
	f.Add([]byte("header\n 0: short\n"), 0)
	f.Fuzz(func(t *testing.T, data []byte, port int) {
		queues := map[uint64]uint64{}
		if err := parseReceiveQueues(data, port, queues); err != nil {
			return
		}
		want := fmt.Sprintf(":%04X", port)
		if len(queues) > 0 && !strings.Contains(string(data), want) {
			t.Errorf("sockets %v found on port %d, absent from the input", queues, port)
		}
	})
}

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
