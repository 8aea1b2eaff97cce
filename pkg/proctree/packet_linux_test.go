package proctree

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// packetModes are the helper's ways of waiting for a datagram on a UDP
// socket (see helperModes).
func packetModes() map[string]waitMode {
	return map[string]waitMode{
		"recvfrom": func(fd int, ready func()) error {
			ready()
			return retry(func() error { _, _, err := unix.Recvfrom(fd, make([]byte, 16), 0); return err })
		},
		"recvmsg": func(fd int, ready func()) error {
			ready()
			return retry(func() error { _, _, _, _, err := unix.Recvmsg(fd, make([]byte, 16), nil, 0); return err })
		},
		"recvmmsg": func(fd int, ready func()) error {
			buf := make([]byte, 16)
			iov := unix.Iovec{Base: &buf[0]}
			iov.SetLen(len(buf))
			var m struct {
				hdr unix.Msghdr
				n   uint32
				_   [4]byte
			}
			m.hdr.Iov = &iov
			m.hdr.SetIovlen(1)
			ready()
			return retry(func() error {
				if _, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m)), 1, 0, 0, 0); e != 0 {
					return e
				}
				return nil
			})
		},
		"read": func(fd int, ready func()) error {
			ready()
			return retry(func() error { _, err := unix.Read(fd, make([]byte, 16)); return err })
		},
		"epoll": func(fd int, ready func()) error { return epollWait(fd, unix.EPOLLIN, ready) },
		// A Go server: ReadFrom waits in the netpoller's epoll set.
		"go-readfrom": func(fd int, ready func()) error {
			pc, err := net.FilePacketConn(os.NewFile(uintptr(fd), "udp"))
			if err != nil {
				return err
			}
			ready()
			_, _, err = pc.ReadFrom(make([]byte, 16))
			return err
		},
	}
}

// packetFile returns a blocking UDP socket bound to address (port 0: a
// free one), made without Go's poller so that the test process holds it
// without waiting on it, with SO_REUSEPORT if reusePort, with its address
// and inode.
func packetFile(t testing.TB, address string, reusePort bool) (*os.File, netip.AddrPort, uint64) {
	t.Helper()
	ap := netip.MustParseAddrPort(address)
	sa, family, err := sockaddr(ap)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "udp")
	t.Cleanup(func() { f.Close() })
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	inode, err := InodeOf(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch got := got.(type) {
	case *unix.SockaddrInet4:
		return f, netip.AddrPortFrom(netip.AddrFrom4(got.Addr), uint16(got.Port)), inode
	case *unix.SockaddrInet6:
		return f, netip.AddrPortFrom(netip.AddrFrom16(got.Addr), uint16(got.Port)), inode
	}
	t.Fatalf("bound to %T", got)
	return nil, netip.AddrPort{}, 0
}

// TestBoundOnChild: a child that inherited a UDP socket is bound on its
// address; a process without it is not, nor is the child on another port,
// nor a process holding a TCP listener of the same port.
func TestBoundOnChild(t *testing.T) {
	t.Parallel()
	f, addr, inode := packetFile(t, "127.0.0.1:0", false)
	holder, _ := start(t, exec.Command("sleep", "30"), false, f)
	f.Close() // the child's copy is the only one now
	other, _ := start(t, exec.Command("sleep", "30"), false)
	_, elsewhere, _ := packetFile(t, "127.0.0.1:0", false) // held by the test process alone
	tcp, err := net.Listen("tcp4", addr.String())          // the same port, for TCP
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })

	tests := []struct {
		name string
		pids []int
		addr netip.AddrPort
		want bool
	}{
		{name: "holder", pids: []int{holder}, addr: addr, want: true},
		{name: "holder among others", pids: []int{other, os.Getpid(), holder}, addr: addr, want: true},
		{name: "TCP on the port", pids: []int{other, os.Getpid()}, addr: addr, want: false},
		{name: "another port", pids: []int{holder}, addr: elsewhere, want: false},
		{name: "another address", pids: []int{holder}, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), addr.Port()), want: false},
		{name: "no pids", pids: nil, addr: addr, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BoundOn(tt.pids, tt.addr)
			if got != tt.want || err != nil {
				t.Fatalf("BoundOn(%v, %s) = %v, %v; want %v, nil", tt.pids, tt.addr, got, err, tt.want)
			}
		})
	}
	if got, err := ListensOn([]int{holder}, addr); got || err != nil {
		t.Fatalf("ListensOn(UDP holder, %s) = %v, %v; want false, nil", addr, got, err)
	}

	ls, err := PacketListeners(addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Inode != inode || ls[0].Addr != addr || ls[0].UID != uint32(os.Getuid()) {
		t.Fatalf("PacketListeners(%s) = %+v; want one with inode %d, uid %d", addr, ls, inode, os.Getuid())
	}
}

// TestBoundOnWildcard: a wildcard UDP socket takes datagrams for every
// address of its port, and a dual-stack [::] one for IPv4 too.
func TestBoundOnWildcard(t *testing.T) {
	t.Parallel()
	self := []int{os.Getpid()}
	loop4 := netip.MustParseAddr("127.0.0.1")
	loop6 := netip.MustParseAddr("::1")
	tests := []struct {
		name, network, address string
		v6                     bool // needs IPv6
		want4, want6           bool // bound on 127.0.0.1:P, on [::1]:P
		wantV6Only             bool
	}{
		{name: "0.0.0.0", network: "udp4", address: "0.0.0.0:0", want4: true},
		{name: "127.0.0.1", network: "udp4", address: "127.0.0.1:0", want4: true},
		{name: "[::] dual-stack", network: "udp", address: "[::]:0", v6: true, want4: true, want6: true},
		{name: "[::] v6only", network: "udp6", address: "[::]:0", v6: true, want6: true, wantV6Only: true},
		{name: "[::1]", network: "udp6", address: "[::1]:0", v6: true, want6: true, wantV6Only: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.v6 {
				needIPv6(t)
			}
			pc, err := net.ListenPacket(tt.network, tt.address)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
			inode := packetInode(t, pc)
			for _, c := range []struct {
				addr netip.Addr
				want bool
			}{{loop4, tt.want4}, {loop6, tt.want6}} {
				addr := netip.AddrPortFrom(c.addr, port)
				ls, err := PacketListeners(addr)
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(ls, func(l Listener) bool { return l.Inode == inode })
				if (i >= 0) != c.want {
					t.Errorf("PacketListeners(%s) = %+v; want ours (inode %d): %v", addr, ls, inode, c.want)
				}
				if i >= 0 && ls[i].V6Only != tt.wantV6Only {
					t.Errorf("PacketListeners(%s) = %+v; want V6Only %v", addr, ls[i], tt.wantV6Only)
				}
				if got, err := BoundOn(self, addr); c.want && (!got || err != nil) {
					t.Errorf("BoundOn(self, %s) = %v, %v; want true, nil", addr, got, err)
				}
			}
		})
	}
}

// TestPacketConnected: a connected UDP socket on the port takes no one
// else's datagrams, so it is no listener, but it holds the address: it
// blocks a bind, and its holder is named.
func TestPacketConnected(t *testing.T) {
	t.Parallel()
	c, err := net.Dial("udp4", "127.0.0.1:9") // nothing is sent
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr := c.LocalAddr().(*net.UDPAddr).AddrPort()
	if ls, err := PacketListeners(addr); len(ls) != 0 || err != nil {
		t.Fatalf("PacketListeners(%s) = %+v, %v; want none", addr, ls, err)
	}
	holders, blocked, err := PacketAddressInUse(addr)
	if err != nil || !blocked || !slices.Contains(holders, os.Getpid()) {
		t.Fatalf("PacketAddressInUse(%s) = %v, %v, %v; want the test process %d, blocked", addr, holders, blocked, err, os.Getpid())
	}
}

// TestPacketAddressInUse: a UDP socket without SO_REUSEPORT blocks the
// address, one with it shares it, a free port is free.
func TestPacketAddressInUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		bind        string // "": nothing is bound on the probed port
		reusePort   bool
		probe       string // the address probed, on the bound port
		wantBlocked bool
	}{
		{name: "plain", bind: "127.0.0.1:0", probe: "127.0.0.1", wantBlocked: true},
		{name: "plain wildcard", bind: "0.0.0.0:0", probe: "127.0.0.1", wantBlocked: true},
		{name: "SO_REUSEPORT", bind: "127.0.0.1:0", reusePort: true, probe: "127.0.0.1"},
		{name: "another address", bind: "127.0.0.1:0", probe: "127.0.0.2"},
		{name: "free", probe: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var port uint16
			if tt.bind == "" {
				f, addr, _ := packetFile(t, "127.0.0.1:0", false)
				f.Close()
				port = addr.Port()
			} else {
				_, addr, _ := packetFile(t, tt.bind, tt.reusePort)
				port = addr.Port()
			}
			addr := netip.AddrPortFrom(netip.MustParseAddr(tt.probe), port)
			holders, blocked, err := PacketAddressInUse(addr)
			if err != nil {
				t.Fatal(err)
			}
			if blocked != tt.wantBlocked {
				t.Errorf("PacketAddressInUse(%s) blocked = %v; want %v", addr, blocked, tt.wantBlocked)
			}
			wantHolding := tt.bind != "" && tt.probe != "127.0.0.2"
			if slices.Contains(holders, os.Getpid()) != wantHolding {
				t.Errorf("PacketAddressInUse(%s) holders = %v; want the test process (%d) in it: %v",
					addr, holders, os.Getpid(), wantHolding)
			}
		})
	}
}

// TestWaitsOnPacketHelper: a child waits for datagrams on its inherited
// UDP socket, moved to another fd, in each way packetModes knows; a
// holder that waits on nothing is not waiting.
func TestWaitsOnPacketHelper(t *testing.T) {
	t.Parallel()
	modes := packetModes()
	names := make([]string, 0, len(modes))
	for name := range modes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, _, inode := packetFile(t, "127.0.0.1:0", false)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+name)
			pid, _ := start(t, cmd, true, f)
			eventually(t, "WaitsOn(helper "+name+")", func() (bool, error) { return WaitsOn([]int{pid}, inode) })
			// The test process holds the socket too, but waits on nothing.
			assertNotWaiting(t, os.Getpid(), inode)
		})
	}
	t.Run("sleep", func(t *testing.T) {
		t.Parallel()
		f, _, inode := packetFile(t, "127.0.0.1:0", false)
		pid, _ := start(t, exec.Command("sleep", "30"), false, f)
		assertNotWaiting(t, pid, inode)
	})
}

// TestWaitsOnPacketPython: a foreign UDP server's ways of waiting, in
// Python.
func TestWaitsOnPacketPython(t *testing.T) {
	t.Parallel()
	needPython(t)
	const prelude = "import os, socket, select\n" +
		"s = socket.fromfd(3, socket.AF_INET, socket.SOCK_DGRAM)\n"
	tests := []struct {
		name, wait string
	}{
		{name: "recvfrom", wait: "s.recvfrom(16)"},
		{name: "recv", wait: "s.recv(16)"},
		{name: "recvmsg", wait: "s.recvmsg(16)"},
		{name: "os.read", wait: "os.read(3, 16)"},
		{name: "select", wait: "select.select([s], [], [])"},
		{name: "selectors", wait: "import selectors; d = selectors.DefaultSelector(); d.register(s, selectors.EVENT_READ); d.select()"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, _, inode := packetFile(t, "127.0.0.1:0", false)
			code := prelude + "print('ready', flush=True)\n" + tt.wait
			pid, _ := start(t, exec.Command(pythonPath, "-c", code), true, f)
			eventually(t, "WaitsOn(python "+tt.name+")", func() (bool, error) { return WaitsOn([]int{pid}, inode) })
		})
	}
}

// pyPacket is a child server in child socket mode for UDP: it binds its
// own SO_REUSEPORT socket on 127.0.0.1:argv[1] (0: a free port), prints
// "PORT PID" and sleeps without ever reading.
const pyPacket = `
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], os.getpid(), flush=True)
time.sleep(600)
`

// startPacket starts pyPacket on port as a child and returns its pid and
// address.
func startPacket(t testing.TB, port uint16) (int, netip.AddrPort) {
	t.Helper()
	cmd := exec.Command(pythonPath, "-c", pyPacket, strconv.Itoa(int(port)))
	_, out := start(t, cmd, false)
	return readListener(t, cmd, out)
}

// TestTakePacket: the descriptor taken from a child is its UDP socket,
// close-on-exec, and a datagram sent to the address can be read through
// it.
func TestTakePacket(t *testing.T) {
	t.Parallel()
	needPython(t)
	other, _ := start(t, exec.Command("sleep", "30"), false)
	pid, addr := startPacket(t, 0)
	fd, inode, err := TakePacket([]int{other, pid}, addr)
	if err != nil {
		t.Fatalf("TakePacket(%s): %v", addr, err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	ls, err := PacketListeners(addr)
	if err != nil || len(ls) != 1 || ls[0].Inode != inode {
		t.Fatalf("PacketListeners(%s) = %+v, %v; want the one taken, inode %d", addr, ls, err, inode)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("fd flags %#x, %v; want FD_CLOEXEC", flags, err)
	}
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); typ != unix.SOCK_DGRAM || err != nil {
		t.Fatalf("SO_TYPE = %d, %v; want SOCK_DGRAM", typ, err)
	}
	c, err := net.Dial("udp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	// The child's socket is blocking: poll first, so a bug fails the test
	// rather than hanging it.
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(deadline.Milliseconds())); n != 1 || err != nil {
		t.Fatalf("poll the taken socket = %d, %v; want 1, nil", n, err)
	}
	buf := make([]byte, 16)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v from the taken socket; want ping", buf[:n], err)
	}
}

// TestTakePacketErrors: two children with a socket each on the address
// are two, not one to take; processes without one have none.
func TestTakePacketErrors(t *testing.T) {
	t.Parallel()
	needPython(t)
	a, addr := startPacket(t, 0)
	b, _ := startPacket(t, addr.Port())
	other, _ := start(t, exec.Command("sleep", "30"), false)
	_, free, _ := packetFile(t, "127.0.0.1:0", false)
	tests := []struct {
		name string
		pids []int
		addr netip.AddrPort
		want error
	}{
		{name: "two", pids: []int{a, b}, addr: addr, want: ErrManyListeners},
		{name: "not holding", pids: []int{other}, addr: addr, want: ErrNoListener},
		{name: "no socket held by them", pids: []int{a}, addr: free, want: ErrNoListener},
		{name: "nothing bound", pids: []int{a}, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), addr.Port()), want: ErrNoListener},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, _, err := TakePacket(tt.pids, tt.addr)
			if err == nil {
				unix.Close(fd)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("TakePacket(%v, %s) = %v; want %v", tt.pids, tt.addr, err, tt.want)
			}
		})
	}
}

// packetInode returns the socket inode of a Go UDP socket.
func packetInode(t testing.TB, pc net.PacketConn) uint64 {
	t.Helper()
	raw, err := pc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var inode uint64
	var ierr error
	if err := raw.Control(func(fd uintptr) { inode, ierr = InodeOf(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return inode
}
