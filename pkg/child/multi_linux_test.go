package child

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What helperMulti serves before it exits: connections accepted on http
// and on admin, datagrams answered on dns.
const (
	multiHTTP      = 3
	multiAdmin     = 5
	multiDatagrams = 7
)

// multiFDs are the descriptors the master passes helperMulti: http,
// admin, dns, then the counters page.
var multiFDs = []int{3, 4, 5, 6}

// helperMulti is a child under --sockets master with three listeners
// (http and admin on TCP, dns on UDP, fds 3-5) and a counters page (fd
// 6). It checks what taking them does to its descriptors and
// environment, then serves a fixed number of connections and datagrams.
func helperMulti() error {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid())) // as the master's spawn does
	ctx := context.Background()
	ls, err := Listeners()
	if err != nil {
		return err
	}
	if want := []NamedListener{{"http", "tcp"}, {"admin", "tcp"}, {"dns", "udp"}}; !slices.Equal(ls, want) {
		return fmt.Errorf("Listeners() = %v, want %v", ls, want)
	}
	for _, name := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", envCountersFD} {
		if v, ok := os.LookupEnv(name); ok {
			return fmt.Errorf("%s=%q still set once read", name, v)
		}
	}
	socks := map[string]int{}         // the inherited sockets, by their /proc/self/fd link
	for _, fd := range multiFDs[:3] { // open until taken, but not for a grandchild
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			return fmt.Errorf("fd %d before it is taken: flags %#x, %v; want close-on-exec", fd, flags, err)
		}
		link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if err != nil {
			return err
		}
		socks[link] = fd
	}
	httpLn, err := Listen(ctx)
	if err != nil {
		return err
	}
	defer httpLn.Close()
	adminLn, err := ListenNamed(ctx, "admin")
	if err != nil {
		return err
	}
	defer adminLn.Close()
	pc, err := ListenPacket(ctx, "")
	if err != nil {
		return err
	}
	defer pc.Close()
	if _, err := ListenNamed(ctx, "admin"); err == nil || !strings.Contains(err.Error(), "already taken") {
		return fmt.Errorf("second take of admin: %v, want already taken", err)
	}
	// Each socket is now open once, as Go's duplicate (which may reuse
	// a number of 3-6), and the counters page not at all: it is mapped.
	open, err := openFiles()
	if err != nil {
		return err
	}
	for link, fd := range socks {
		if open[link] != 1 {
			return fmt.Errorf("inherited fd %d (%s) open %d times once taken, want once", fd, link, open[link])
		}
	}
	for link, n := range open {
		if strings.Contains(link, "prefork-counters") {
			return fmt.Errorf("counters page %s open %d times once mapped", link, n)
		}
	}
	dns := pc.(*PacketConn)
	for _, s := range []syscallConner{httpLn.(*countingListener).Listener.(syscallConner),
		adminLn.(*countingListener).Listener.(syscallConner), dns} {
		if err := checkNonblock(s); err != nil {
			return err
		}
	}
	errc := make(chan error, 3)
	go func() { errc <- acceptN(httpLn, multiHTTP) }()
	go func() { errc <- acceptN(adminLn, multiAdmin) }()
	go func() { errc <- answerN(dns, multiDatagrams) }()
	for range 3 {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// openFiles counts this process's descriptors by /proc/self/fd link.
func openFiles() (map[string]int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	open := map[string]int{}
	for _, e := range ents {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			open[link]++
		}
	}
	return open, nil
}

// acceptN accepts and closes n connections.
func acceptN(ln net.Listener, n int) error {
	for range n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// answerN answers n datagrams with their own payload.
func answerN(pc *PacketConn, n int) error {
	buf := make([]byte, 64)
	for range n {
		k, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:k], from); err != nil {
			return err
		}
	}
	return nil
}

// A child given two TCP listeners and a UDP one by the master takes each
// by name, counts every connection and datagram on its listener's
// counter, and leaves the master's sockets non-blocking.
func TestListenInheritsNamedListeners(t *testing.T) {
	httpFile, httpAddr := rawListener(t)
	adminFile, adminAddr := rawListener(t)
	dnsFile, dnsAddr := rawUDPSocket(t)
	page, pageFD := newCountersPage(t)
	pageFile := os.NewFile(uintptr(pageFD), "counters")
	t.Cleanup(func() { pageFile.Close() })

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(helperEnviron("multi"), "LISTEN_FDS=3", "LISTEN_FDNAMES=http:admin:dns",
		"PREFORK_LISTENERS=http,admin,dns", "PREFORK_LISTEN="+httpAddr,
		"PREFORK_LISTEN_HTTP="+httpAddr, "PREFORK_LISTEN_ADMIN="+adminAddr, "PREFORK_LISTEN_DNS=udp://"+dnsAddr,
		envCountersFD+"="+itoa(multiFDs[3]))
	cmd.ExtraFiles = []*os.File{httpFile, adminFile, dnsFile, pageFile} // fds 3-6
	var stderr lockedBuffer                                             // written by os/exec's copier while the test reads it
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	// Connections wait in the shared sockets' queues until the helper
	// accepts them.
	for addr, n := range map[string]int{httpAddr: multiHTTP, adminAddr: multiAdmin} {
		for range n {
			c, err := net.DialTimeout("tcp", addr, waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	client, err := net.Dial("udp", dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 64)
	for i := range multiDatagrams {
		msg := "q" + strconv.Itoa(i)
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if n, err := client.Read(buf); err != nil || string(buf[:n]) != msg {
			t.Fatalf("answer %d: %q, %v (stderr: %s)", i, buf[:n], err, stderr.String())
		}
	}
	if err := recv(t, "helper exit", exited); err != nil {
		t.Fatalf("helper: %v: %s", err, stderr.String())
	}
	got := [...]uint64{page.Accepts(), page.Datagrams(), page.Listener(0), page.Listener(1), page.Listener(2)}
	if want := [...]uint64{multiHTTP + multiAdmin, multiDatagrams, multiHTTP, multiAdmin, multiDatagrams}; got != want {
		t.Errorf("accepts, datagrams, http, admin, dns = %v, want %v", got, want)
	}
	for _, f := range []*os.File{httpFile, adminFile, dnsFile} {
		if err := checkNonblock(f); err != nil {
			t.Errorf("the master's copy of %s: %v", f.Name(), err)
		}
	}
}

// A child given a socket of the wrong kind for its listener gets an
// error that names the listener.
func TestListenInheritedWrongType(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	udp, _ := rawUDPSocket(t)
	cmd.Env = append(helperEnviron("listen"), "LISTEN_FDS=1", "PREFORK_LISTENERS=web", "PREFORK_LISTEN_WEB=127.0.0.1:1")
	cmd.ExtraFiles = []*os.File{udp}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `listener "web" is a UDP listener: take it with ListenPacket`) {
		t.Fatalf("helper: %v: %s; want the UDP listener error", err, out)
	}
}

// lockedBuffer is a strings.Builder safe for one writer and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rawUDPSocket makes a bound UDP socket the way a master holding sockets
// does: SOCK_NONBLOCK, wrapped by os.NewFile (TRAPS 5).
func rawUDPSocket(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "udp")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}
