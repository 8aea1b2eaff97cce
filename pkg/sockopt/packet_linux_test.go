package sockopt

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mustListenPacketFD calls ListenPacketFD and closes the descriptor when
// the test ends.
func mustListenPacketFD(t *testing.T, address string) int {
	t.Helper()
	fd, err := ListenPacketFD(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// needIPv6 skips the test where ::1 cannot be bound.
func needIPv6(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	c.Close()
}

// ListenPacketFD makes a bare UDP socket, non-blocking (TRAPS 5),
// close-on-exec, with SO_REUSEPORT and without SO_REUSEADDR, in one group
// with ListenPacket's sockets, which receives datagrams.
func TestListenPacketFD(t *testing.T) {
	t.Parallel()
	for _, address := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(address, func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(address, "[") {
				needIPv6(t)
			}
			fd := mustListenPacketFD(t, address)
			addr := localAddr(t, fd)

			for _, opt := range []struct {
				name       string
				level, opt int
				want       int
			}{
				{"SO_TYPE", unix.SOL_SOCKET, unix.SO_TYPE, unix.SOCK_DGRAM},
				{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_UDP},
				{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
				{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 0},
				{"SO_BROADCAST", unix.SOL_SOCKET, unix.SO_BROADCAST, 1},
			} {
				if v, err := unix.GetsockoptInt(fd, opt.level, opt.opt); err != nil || v != opt.want {
					t.Errorf("%s = %d (%v), want %d", opt.name, v, err, opt.want)
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

			// One group with ListenPacket's sockets, and with Go's own
			// with both options; a plain socket cannot join.
			pc, err := ListenPacket(context.Background(), addr)
			if err != nil {
				t.Fatalf("ListenPacket on ListenPacketFD's %s: %v", addr, err)
			}
			pc.Close()
			lc := net.ListenConfig{Control: Control}
			if pc, err := lc.ListenPacket(context.Background(), "udp", addr); err != nil {
				t.Errorf("a socket with SO_REUSEADDR and SO_REUSEPORT beside ListenPacketFD's %s: %v", addr, err)
			} else {
				pc.Close()
			}
			if pc, err := net.ListenPacket("udp", addr); err == nil {
				pc.Close()
				t.Errorf("a socket without SO_REUSEPORT joined the group on %s", addr)
			}

			// It receives: the datagram waits in its buffer.
			send(t, addr, "hello")
			got := recvOne(t, fd)
			if got != "hello" {
				t.Errorf("received %q, want hello", got)
			}
		})
	}
}

// send sends one datagram to addr from a new socket.
func send(t *testing.T, addr, payload string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// recvOne reads one datagram from the non-blocking socket fd, waiting
// for it at most the deadline.
func recvOne(t *testing.T, fd int) string {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int((10 * time.Second).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if n != 1 || err != nil {
			t.Fatalf("poll = %d, %v; want a datagram", n, err)
		}
		break
	}
	buf := make([]byte, 2048)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// A wildcard is the socket Go's ListenPacket("udp") makes: one dual-stack
// IPv6 socket.
func TestListenPacketFDWildcard(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			pc, err := ListenPacket(context.Background(), addr)
			if err != nil {
				t.Skipf("ListenPacket(%s): %v", addr, err)
			}
			raw, err := pc.(*net.UDPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var want int
			raw.Control(func(fd uintptr) { want = family(t, int(fd)) })
			pc.Close()
			fd := mustListenPacketFD(t, addr)
			if got := family(t, fd); got != want {
				t.Errorf("ListenPacketFD(%s) family %d, ListenPacket's %d", addr, got, want)
			}
			if want == unix.AF_INET6 {
				if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v != 0 {
					t.Errorf("IPV6_V6ONLY = %d (%v), want 0", v, err)
				}
			}
		})
	}
}

func TestListenPacketFDErrors(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"no-port", "127.0.0.1:http-nonsense", "[fe80::1%no-such-if]:0", "udp://127.0.0.1:0"} {
		if fd, err := ListenPacketFD(addr); err == nil {
			unix.Close(fd)
			t.Errorf("ListenPacketFD(%q) = nil error", addr)
		}
	}
	// An address taken without SO_REUSEPORT.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if fd, err := ListenPacketFD(pc.LocalAddr().String()); !errors.Is(err, unix.EADDRINUSE) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("ListenPacketFD on %s, taken by a plain socket, = %v, want EADDRINUSE", pc.LocalAddr(), err)
	}
}

// CheckFreePacket fails while anything is bound on the address: a plain
// socket, a reuseport group, a wildcard that covers it, a client's
// connected socket.
func TestCheckFreePacket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		bind  func(t *testing.T) string // binds, returns the address bound
		check func(addr string) string  // the address checked
		v6    bool
	}{
		{name: "plain", bind: func(t *testing.T) string { return plainPacket(t, "udp4", "127.0.0.1:0") }},
		{name: "reuseport group", bind: func(t *testing.T) string { return localAddr(t, mustListenPacketFD(t, "127.0.0.1:0")) }},
		{name: "SO_REUSEADDR", bind: func(t *testing.T) string {
			lc := net.ListenConfig{Control: Control}
			pc, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			return pc.LocalAddr().String()
		}},
		{name: "wildcard covers", bind: func(t *testing.T) string { return plainPacket(t, "udp4", "0.0.0.0:0") },
			check: func(addr string) string { return withHost(addr, "127.0.0.1") }},
		{name: "dual-stack checked over IPv4", bind: func(t *testing.T) string { return plainPacket(t, "udp4", "127.0.0.1:0") },
			check: func(addr string) string { return withHost(addr, "") }, v6: true},
		{name: "connected client", bind: func(t *testing.T) string {
			c, err := net.Dial("udp4", "127.0.0.1:9") // no packet is sent
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c.LocalAddr().String()
		}},
		{name: "IPv6", bind: func(t *testing.T) string { return localAddr(t, mustListenPacketFD(t, "[::1]:0")) }, v6: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.v6 {
				needIPv6(t)
			}
			addr := tt.bind(t)
			if tt.check != nil {
				addr = tt.check(addr)
			}
			err := CheckFreePacket(addr)
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "in use") {
				t.Fatalf("CheckFreePacket(%s) = %v; want EADDRINUSE, saying the address is in use", addr, err)
			}
		})
	}
	t.Run("free", func(t *testing.T) {
		t.Parallel()
		fd, err := ListenPacketFD("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := localAddr(t, fd)
		unix.Close(fd)
		if err := CheckFreePacket(addr); err != nil {
			t.Fatalf("CheckFreePacket(%s) after close = %v, want nil", addr, err)
		}
		// The check leaves the address free.
		mustListenPacketFD(t, addr)
	})
}

// plainPacket binds a UDP socket without options until the test ends and
// returns its address.
func plainPacket(t *testing.T, network, address string) string {
	t.Helper()
	pc, err := net.ListenPacket(network, address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// withHost returns addr with its host replaced.
func withHost(addr, host string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, port)
}

// packetAs binds a UDP socket with control's options on addr from a
// socket owned by uid (see listenAs), and returns it, or the bind's
// error.
func packetAs(t *testing.T, uid int, addr string, control func(string, string, syscall.RawConn) error) (net.PacketConn, error) {
	t.Helper()
	type result struct {
		pc  net.PacketConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		unix.SetfsuidRetUid(uid)
		lc := net.ListenConfig{Control: control}
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		done <- result{pc, err}
	}()
	r := <-done
	if r.err == nil {
		t.Cleanup(func() { r.pc.Close() })
	}
	return r.pc, r.err
}

// Another user cannot bind beside ListenPacketFD's socket, not even with
// SO_REUSEADDR and SO_REUSEPORT. (Beside a socket that has SO_REUSEADDR
// too, it can, and takes the datagrams: see PacketControl.)
func TestListenPacketFDOtherUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a socket of another user")
	}
	fd := mustListenPacketFD(t, "127.0.0.1:0")
	addr := localAddr(t, fd)
	for _, c := range []struct {
		name    string
		control func(string, string, syscall.RawConn) error
	}{{"SO_REUSEPORT", PacketControl}, {"SO_REUSEADDR and SO_REUSEPORT", Control}} {
		if _, err := packetAs(t, 65534, addr, c.control); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("another user's socket with %s beside ListenPacketFD's: %v, want EADDRINUSE", c.name, err)
		}
	}
	if err := CheckFreePacket(addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("CheckFreePacket beside ListenPacketFD's socket: %v, want EADDRINUSE", err)
	}

	// The hijack, with SO_REUSEADDR on the group's side.
	lc := net.ListenConfig{Control: Control}
	group, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer group.Close()
	if _, err := packetAs(t, 65534, group.LocalAddr().String(), Control); err != nil {
		t.Logf("this kernel refuses the stranger beside SO_REUSEADDR too: %v", err)
	}
}

// ReceiveQueue grows with every datagram left unread, and /proc/net/udp
// shows the same figure (ReceiveQueues); both go back to 0 once the
// datagrams are read.
func TestReceiveQueue(t *testing.T) {
	t.Parallel()
	fd := mustListenPacketFD(t, "127.0.0.1:0")
	addr := localAddr(t, fd)
	_, port, _ := net.SplitHostPort(addr)
	inode := inodeOf(t, fd)

	if q, err := ReceiveQueue(fd); q != 0 || err != nil {
		t.Fatalf("ReceiveQueue of a new socket = %d, %v; want 0, nil", q, err)
	}
	const n = 5
	var last uint32
	for i := range n {
		send(t, addr, strings.Repeat("x", 100))
		// Loopback delivers within the send call; the poll only makes
		// the test safe against a slower path.
		q := waitQueue(t, fd, func(q uint32) bool { return q > last })
		if q < 100 {
			t.Fatalf("after %d datagrams of 100 bytes: %d bytes queued", i+1, q)
		}
		last = q
	}
	queues, err := ReceiveQueues(atoi(t, port))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := queues[inode]; !ok || got != uint64(last) {
		t.Errorf("ReceiveQueues(%s)[%d] = %d, %v; want %d (ReceiveQueue)", port, inode, got, ok, last)
	}

	for range n {
		recvOne(t, fd)
	}
	if q, err := ReceiveQueue(fd); q != 0 || err != nil {
		t.Fatalf("ReceiveQueue once read = %d, %v; want 0, nil", q, err)
	}
	if queues, err := ReceiveQueues(atoi(t, port)); err != nil || queues[inode] != 0 {
		t.Fatalf("ReceiveQueues once read = %v, %v; want %d: 0", queues, err, inode)
	}
}

// waitQueue polls ReceiveQueue until ok accepts it, within the deadline.
func waitQueue(t *testing.T, fd int, ok func(uint32) bool) uint32 {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		q, err := ReceiveQueue(fd)
		if err != nil {
			t.Fatal(err)
		}
		if ok(q) {
			return q
		}
		if time.Now().After(end) {
			t.Fatalf("receive queue still %d after 10s", q)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReceiveQueueNotSocket(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	raw, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var qerr error
	raw.Control(func(fd uintptr) { _, qerr = ReceiveQueue(int(fd)) })
	if !errors.Is(qerr, unix.ENOTSOCK) {
		t.Fatalf("ReceiveQueue(pipe) = %v; want ENOTSOCK", qerr)
	}
}

// ReceiveQueues lists every UDP socket of the port, IPv6 ones too, and
// nothing of another port.
func TestReceiveQueuesFamilies(t *testing.T) {
	t.Parallel()
	needIPv6(t)
	fd4 := mustListenPacketFD(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(localAddr(t, fd4))
	fd6 := mustListenPacketFD(t, "[::1]:"+port)
	other := mustListenPacketFD(t, "127.0.0.1:0")
	queues, err := ReceiveQueues(atoi(t, port))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{fd4, fd6} {
		if _, ok := queues[inodeOf(t, fd)]; !ok {
			t.Errorf("ReceiveQueues(%s) = %v; want socket:[%d] in it", port, queues, inodeOf(t, fd))
		}
	}
	if _, ok := queues[inodeOf(t, other)]; ok {
		t.Errorf("ReceiveQueues(%s) = %v; has socket:[%d] of another port", port, queues, inodeOf(t, other))
	}
}

// inodeOf returns the inode of the socket at fd.
func inodeOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
