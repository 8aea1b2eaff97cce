package proctree

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestListensOnChild: a child that inherited a listener listens on its
// address; a process without it does not, nor does the child on another
// port.
func TestListensOnChild(t *testing.T) {
	t.Parallel()
	f, addr, inode := listenFile(t)
	holder, _ := start(t, exec.Command("sleep", "30"), false, f)
	f.Close() // the child's copy is the only one now
	other, _ := start(t, exec.Command("sleep", "30"), false)
	_, elsewhere, _ := listenFile(t) // held by the test process alone

	tests := []struct {
		name string
		pids []int
		addr netip.AddrPort
		want bool
	}{
		{name: "holder", pids: []int{holder}, addr: addr, want: true},
		{name: "holder among others", pids: []int{other, os.Getpid(), holder}, addr: addr, want: true},
		{name: "not holding", pids: []int{other, os.Getpid()}, addr: addr, want: false},
		{name: "another port", pids: []int{holder}, addr: elsewhere, want: false},
		{name: "another address", pids: []int{holder}, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), addr.Port()), want: false},
		{name: "no pids", pids: nil, addr: addr, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ListensOn(tt.pids, tt.addr)
			if got != tt.want || err != nil {
				t.Fatalf("ListensOn(%v, %s) = %v, %v; want %v, nil", tt.pids, tt.addr, got, err, tt.want)
			}
		})
	}

	ls, err := Listeners(addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Inode != inode || ls[0].Addr != addr || ls[0].UID != uint32(os.Getuid()) {
		t.Fatalf("Listeners(%s) = %+v; want one with inode %d, uid %d", addr, ls, inode, os.Getuid())
	}
	// A child another test forks while the socket was open here holds it
	// too, until it execs: only the holder is certain.
	holders, err := Holders([]uint64{inode})
	if err != nil || !slices.Contains(holders, holder) || slices.Contains(holders, os.Getpid()) {
		t.Fatalf("Holders(%d) = %v, %v; want %d in it, and not the test process", inode, holders, err, holder)
	}
}

// TestListensOnWildcard: a wildcard listener takes connections for every
// address of its port, and a dual-stack [::] one for IPv4 addresses too.
func TestListensOnWildcard(t *testing.T) {
	t.Parallel()
	self := []int{os.Getpid()}
	loop4 := netip.MustParseAddr("127.0.0.1")
	loop6 := netip.MustParseAddr("::1")
	tests := []struct {
		name, network, address string
		v6                     bool // needs IPv6
		want4, want6           bool // listens on 127.0.0.1:P, on [::1]:P
		wantV6Only             bool
	}{
		{name: "0.0.0.0", network: "tcp4", address: "0.0.0.0:0", want4: true},
		{name: "127.0.0.1", network: "tcp4", address: "127.0.0.1:0", want4: true},
		{name: "[::] dual-stack", network: "tcp", address: "[::]:0", v6: true, want4: true, want6: true},
		{name: "[::] v6only", network: "tcp6", address: "[::]:0", v6: true, want6: true, wantV6Only: true},
		{name: "[::1]", network: "tcp6", address: "[::1]:0", v6: true, want6: true, wantV6Only: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.v6 {
				needIPv6(t)
			}
			ln, err := net.Listen(tt.network, tt.address)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			inode := listenerInode(t, ln)
			// Other tests of this process may listen on the same port
			// of the other family, so ours is told by its inode.
			for _, c := range []struct {
				addr netip.Addr
				want bool
			}{{loop4, tt.want4}, {loop6, tt.want6}} {
				addr := netip.AddrPortFrom(c.addr, port)
				ls, err := Listeners(addr)
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(ls, func(l Listener) bool { return l.Inode == inode })
				if (i >= 0) != c.want {
					t.Errorf("Listeners(%s) = %+v; want ours (inode %d): %v", addr, ls, inode, c.want)
				}
				if i >= 0 && ls[i].V6Only != tt.wantV6Only {
					t.Errorf("Listeners(%s) = %+v; want V6Only %v", addr, ls[i], tt.wantV6Only)
				}
				if got, err := ListensOn(self, addr); c.want && (!got || err != nil) {
					t.Errorf("ListensOn(self, %s) = %v, %v; want true, nil", addr, got, err)
				}
			}
		})
	}
}

// TestListensOnSpecificIsNotWildcard: asking for the wildcard address does
// not find a listener bound to one address.
func TestListensOnSpecificIsNotWildcard(t *testing.T) {
	t.Parallel()
	_, addr, _ := listenFile(t)
	wild := netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port())
	if got, err := ListensOn([]int{os.Getpid()}, wild); got || err != nil {
		t.Fatalf("ListensOn(self, %s) = %v, %v; want false, nil", wild, got, err)
	}
}

// TestInodeOfNotSocket: a pipe has an inode, but is not a socket.
func TestInodeOfNotSocket(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if ino, err := InodeOf(int(r.Fd())); err == nil {
		t.Fatalf("InodeOf(pipe) = %d, nil; want an error", ino)
	}
}

// needIPv6 skips the test where ::1 cannot be bound.
func needIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}
