package steer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// needSteerer loads a Steerer for MaxSlots slots, closed at the end of the
// test, or skips the test where the kernel or the privileges cannot load
// one. Any other failure, a verifier rejection above all, fails the test.
func needSteerer(t testing.TB) *Steerer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading the steering program needs root (CAP_BPF and CAP_NET_ADMIN)")
	}
	s, err := Load(MaxSlots)
	if errors.Is(err, unix.EPERM) || errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("steering cannot load here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close steerer: %v", err)
		}
	})
	return s
}

// group is a SO_REUSEPORT group of listeners on 127.0.0.1, made in slot
// order as the master makes them, with an accept loop per listener that
// counts, remembers which slot got which client port, and closes. Only the
// test's goroutine changes the group; the accept loops get their listener
// as an argument.
type group struct {
	t      testing.TB
	port   int
	lns    []*net.TCPListener
	fds    []int
	closed []bool
	counts [maxGroup]atomic.Int64
	abort  bool     // close accepted connections with a RST (no TIME_WAIT); set before serve
	echo   bool     // write the client's byte back before closing; set before serve
	slotOf sync.Map // client port -> slot
	wg     sync.WaitGroup
}

// maxGroup bounds the listeners of a test group.
const maxGroup = 8

func newGroup(t testing.TB, n int) *group {
	t.Helper()
	g := &group{t: t}
	t.Cleanup(g.closeAll)
	for range n {
		g.add()
	}
	return g
}

// add binds one more listener, the next slot, on the group's port.
func (g *group) add() int {
	g.t.Helper()
	slot := len(g.lns)
	if slot == maxGroup {
		g.t.Fatalf("more than %d listeners", maxGroup)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", g.port)
	ln, err := tcpListen(addr)
	if err != nil {
		g.t.Fatalf("listen slot %d on %s: %v", slot, addr, err)
	}
	tl := ln.(*net.TCPListener)
	g.lns = append(g.lns, tl)
	g.fds = append(g.fds, fdOf(g.t, tl))
	g.closed = append(g.closed, false)
	g.port = tl.Addr().(*net.TCPAddr).Port
	return slot
}

// tcpListen binds a SO_REUSEPORT listener on addr, TCP and not MPTCP,
// which Go would choose by default and steering cannot use.
func tcpListen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: sockopt.Control}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

// fdOf returns c's descriptor, without the dup (and the switch to
// blocking mode) that File() makes.
func fdOf(t testing.TB, c syscall.Conn) int {
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

// serve starts the accept loops of the given slots, or of every slot.
func (g *group) serve(slots ...int) {
	if len(slots) == 0 {
		for i := range g.lns {
			slots = append(slots, i)
		}
	}
	for _, i := range slots {
		ln := g.lns[i]
		g.wg.Go(func() { g.acceptLoop(ln, i) })
	}
}

// acceptLoop accepts on ln, counts, reads the client's byte (so that the
// client's connect has returned before a RST could arrive), echoes it if
// g.echo, and closes.
func (g *group) acceptLoop(ln *net.TCPListener, slot int) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return // closed
		}
		g.slotOf.Store(c.RemoteAddr().(*net.TCPAddr).Port, slot)
		g.counts[slot].Add(1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1)
		if n, _ := c.Read(b); n == 1 && g.echo {
			c.Write(b)
		}
		if g.abort {
			c.SetLinger(0)
		}
		c.Close()
	}
}

// close closes slot's listener.
func (g *group) close(slot int) {
	if !g.closed[slot] {
		g.closed[slot] = true
		g.lns[slot].Close()
	}
}

func (g *group) closeAll() {
	for i := range g.lns {
		g.close(i)
	}
	g.wg.Wait()
}

func (g *group) snapshot() []int64 {
	s := make([]int64, len(g.lns))
	for i := range s {
		s[i] = g.counts[i].Load()
	}
	return s
}

// connect opens k connections to the group from 4 goroutines and waits,
// for each, until the server has accepted and closed it, so that the counts
// include every one when it returns. It returns how many each slot got.
func (g *group) connect(k int) []int64 {
	g.t.Helper()
	before := g.snapshot()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	deadline := time.Now().Add(60 * time.Second)
	for range 4 {
		wg.Go(func() {
			for next.Add(1) <= int64(k) {
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("%d connections not done in 60s", k)
					return
				}
				if _, _, err := g.roundTrip(0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.t.Fatal(err)
	}
	got := g.snapshot()
	for i := range got {
		got[i] -= before[i]
	}
	return got
}

// roundTrip connects from localPort (0: any), waits until the server
// closes the connection, and returns the client port and the slot that
// accepted it.
func (g *group) roundTrip(localPort int) (port, slot int, err error) {
	d := net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: localPort},
		Control:   reuseAddr,
	}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
	if err != nil {
		return localPort, -1, err
	}
	defer c.Close()
	port = c.LocalAddr().(*net.TCPAddr).Port
	if err := hello(c); err != nil {
		return port, -1, fmt.Errorf("connection from port %d: %w", port, err)
	}
	if err := g.answered(c); err != nil {
		return port, -1, fmt.Errorf("connection from port %d: %w", port, err)
	}
	s, ok := g.slotOf.Load(port)
	if !ok {
		return port, -1, fmt.Errorf("connection from port %d: closed before any slot accepted it", port)
	}
	return port, s.(int), nil
}

// answered waits for the server's answer to hello on c: the byte back if
// g.echo, then the close.
func (g *group) answered(c net.Conn) error {
	if g.echo {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return fmt.Errorf("read the echo: %w", err)
		}
		if b[0] != 1 {
			return fmt.Errorf("echo %d, want 1", b[0])
		}
	}
	return waitServerClose(c, g.abort)
}

// hello sends the byte the server reads before it closes.
func hello(c net.Conn) error {
	_, err := c.Write([]byte{1})
	return err
}

// waitServerClose reads c until the server closes it: EOF, or a reset when
// the server aborts. Anything else, or 5 s of silence, is an error.
func waitServerClose(c net.Conn, abort bool) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	switch {
	case err == io.EOF, abort && errors.Is(err, unix.ECONNRESET):
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("not closed by the server in 5s")
	}
	return fmt.Errorf("read: %w, want the server's close", err)
}

// reuseAddr lets a client bind a port whose last connection was reset a
// moment ago.
func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// steer attaches s to g, puts every listener in the array and marks the
// first n slots active and all of them healthy.
func (g *group) steer(s *Steerer, n int) {
	g.t.Helper()
	if err := s.Attach(g.fds[0]); err != nil {
		g.t.Fatal(err)
	}
	for i, fd := range g.fds {
		if err := s.SetSocket(i, fd); err != nil {
			g.t.Fatal(err)
		}
		if err := s.SetHealthy(i, true); err != nil {
			g.t.Fatal(err)
		}
	}
	if err := s.SetSlots(n); err != nil {
		g.t.Fatal(err)
	}
}

// ratio returns max/min of counts (+Inf when a count is 0).
func ratio(counts []int64) float64 {
	lo, hi := counts[0], counts[0]
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	if lo == 0 {
		return math.Inf(1)
	}
	return float64(hi) / float64(lo)
}

func sum(counts []int64) int64 {
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

// wantOnly fails unless every slot in none got 0 connections and every
// other slot got at least least.
func wantOnly(t testing.TB, counts []int64, least int64, none ...int) {
	t.Helper()
	for i, c := range counts {
		if slices.Contains(none, i) && c != 0 {
			t.Errorf("slot %d got %d connections, want 0 (counts %v)", i, c, counts)
		}
		if !slices.Contains(none, i) && c < least {
			t.Errorf("slot %d got %d connections, want at least %d (counts %v)", i, c, least, counts)
		}
	}
}
