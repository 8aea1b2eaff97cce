package steer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// udpGroup is a SO_REUSEPORT group of UDP sockets on 127.0.0.1, bound in
// slot order as the master binds them, with a read loop per socket that
// reports every datagram: which slot got it, from which port.
type udpGroup struct {
	t      testing.TB
	addr   *net.UDPAddr
	conns  []*net.UDPConn
	fds    []int
	closed []bool
	got    chan arrival
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// arrival is one datagram read by a slot.
type arrival struct{ slot, from int }

func newUDPGroup(t testing.TB, n int) *udpGroup {
	t.Helper()
	g := &udpGroup{t: t, addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, got: make(chan arrival, 64), done: make(chan struct{})}
	t.Cleanup(g.closeAll)
	lc := net.ListenConfig{Control: sockopt.Control}
	for slot := range n {
		pc, err := lc.ListenPacket(context.Background(), "udp4", g.addr.String())
		if err != nil {
			t.Fatalf("bind slot %d on %s: %v", slot, g.addr, err)
		}
		c := pc.(*net.UDPConn)
		g.conns = append(g.conns, c)
		g.fds = append(g.fds, fdOf(t, c))
		g.closed = append(g.closed, false)
		g.addr = c.LocalAddr().(*net.UDPAddr)
	}
	return g
}

// serve starts the read loops of the given slots, or of every slot.
func (g *udpGroup) serve(slots ...int) {
	if len(slots) == 0 {
		for i := range g.conns {
			slots = append(slots, i)
		}
	}
	for _, i := range slots {
		c := g.conns[i]
		g.wg.Go(func() { g.readLoop(c, i) })
	}
}

func (g *udpGroup) readLoop(c *net.UDPConn, slot int) {
	b := make([]byte, 64)
	for {
		_, from, err := c.ReadFromUDP(b)
		if err != nil {
			return // closed
		}
		select {
		case g.got <- arrival{slot: slot, from: from.Port}:
		case <-g.done:
			return
		}
	}
}

// close closes slot's socket.
func (g *udpGroup) close(slot int) {
	if !g.closed[slot] {
		g.closed[slot] = true
		g.conns[slot].Close()
	}
}

// closeAll closes every socket and waits for the read loops, once.
func (g *udpGroup) closeAll() {
	g.once.Do(func() {
		close(g.done)
		for i := range g.conns {
			g.close(i)
		}
		g.wg.Wait()
	})
}

// steer attaches s to g, puts every socket in the array, marks every slot
// healthy and the first n active.
func (g *udpGroup) steer(s *Steerer, n int) {
	g.t.Helper()
	if err := s.Attach(g.fds[0]); err != nil {
		g.t.Fatal(err)
	}
	for i, fd := range g.fds {
		if err := s.SetSocket(i, fd); err != nil {
			g.t.Fatal(err)
		}
		setHealthy(g.t, s, i, true)
	}
	if err := s.SetSlots(n); err != nil {
		g.t.Fatal(err)
	}
}

// client returns a UDP socket of its own port, connected to the group.
func (g *udpGroup) client() *net.UDPConn {
	g.t.Helper()
	c, err := net.DialUDP("udp4", nil, g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	return c
}

// send sends one datagram from c and returns the slot that read it, within
// 5 s. One datagram at a time: none waits in a receive buffer, so none is
// dropped for a full one and every arrival is c's.
func (g *udpGroup) send(c *net.UDPConn) int {
	g.t.Helper()
	if _, err := c.Write([]byte{1}); err != nil {
		g.t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	select {
	case a := <-g.got:
		if a.from != port {
			g.t.Fatalf("a datagram from port %d arrived, want one from %d", a.from, port)
		}
		return a.slot
	case <-time.After(5 * time.Second):
		g.t.Fatalf("the datagram from port %d was read by no slot in 5s", port)
	}
	return -1
}

// spread sends one datagram from each of k fresh source ports and returns
// how many each slot read.
func (g *udpGroup) spread(k int) []int64 {
	g.t.Helper()
	counts := make([]int64, len(g.conns))
	for range k {
		c := g.client()
		counts[g.send(c)]++
		c.Close()
	}
	return counts
}

// The steering program works on a UDP reuseport group as on a TCP one:
// Load, Attach and SetSocket take UDP sockets; with every slot healthy
// the spread is the kernel's; an unhealthy slot gets no datagram and its
// share goes to the others evenly; SetSlots confines datagrams to the
// active slots; and Runs and Connections count datagrams, one run and one
// placement per datagram, equal slot by slot to what each socket read.
func TestUDPSteer(t *testing.T) {
	s := needSteerer(t)
	g := newUDPGroup(t, 4)
	g.steer(s, 4)
	g.serve()
	for _, step := range []struct {
		name      string
		n         int
		unhealthy []int
		k         int
		least     int64 // datagrams each slot that may get any gets at least
		none      []int // slots that must get none
	}{
		// 250 ± 14 each.
		{name: "all healthy", n: 4, k: 1000, least: 150},
		// 333 ± 15 each of the other three.
		{name: "slot 2 unhealthy", n: 4, unhealthy: []int{2}, k: 1000, least: 250, none: []int{2}},
		// 500 ± 16 each of slots 0 and 1.
		{name: "2 active slots", n: 2, k: 1000, least: 400, none: []int{2, 3}},
	} {
		if err := s.SetSlots(step.n); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			setHealthy(t, s, i, !slices.Contains(step.unhealthy, i))
		}
		runsBefore, err := s.Runs()
		if err != nil {
			t.Fatal(err)
		}
		before, unplacedBefore := connections(t, s, 4)
		got := g.spread(step.k)
		runsAfter, err := s.Runs()
		if err != nil {
			t.Fatal(err)
		}
		after, unplacedAfter := connections(t, s, 4)
		placed := make([]int64, 4)
		for i := range placed {
			placed[i] = after[i] - before[i]
		}
		t.Logf("%s: read %v, counted %v, unplaced %d, runs %d", step.name, got, placed, unplacedAfter-unplacedBefore, runsAfter-runsBefore)
		wantOnly(t, got, step.least, step.none...)
		if !slices.Equal(got, placed) || unplacedAfter != unplacedBefore {
			t.Errorf("%s: counted %v and %d unplaced, want %v and 0", step.name, placed, unplacedAfter-unplacedBefore, got)
		}
		if runs := runsAfter - runsBefore; runs != uint64(step.k) {
			t.Errorf("%s: %d runs for %d datagrams, want one each", step.name, runs, step.k)
		}
	}
}

// The program's pick for a healthy UDP group is the kernel's own, datagram
// by datagram: the same source ports land on the same sockets once the
// program is detached.
func TestUDPSameChoiceAsKernel(t *testing.T) {
	s := needSteerer(t)
	g := newUDPGroup(t, 4)
	g.steer(s, 4)
	g.serve()
	const k = 400
	clients := make([]*net.UDPConn, k)
	steered := make([]int, k)
	for i := range clients {
		clients[i] = g.client()
		t.Cleanup(func() { clients[i].Close() })
		steered[i] = g.send(clients[i])
	}
	if err := Detach(g.fds[0]); err != nil {
		t.Fatal(err)
	}
	differ := 0
	for i, c := range clients {
		if g.send(c) != steered[i] {
			differ++
		}
	}
	if differ != 0 {
		t.Errorf("%d of %d datagrams went elsewhere without the program", differ, k)
	}
}

// Closing a UDP socket hands nothing on: the datagrams waiting in its
// receive buffer are dropped with it, the program is not run for them (it
// is for a closing TCP listener's queue), and the other slots read none of
// them. Migration is TCP only.
func TestUDPCloseDropsQueue(t *testing.T) {
	s := needSteerer(t)
	g := newUDPGroup(t, 4)
	g.steer(s, 4)
	g.serve(0, 2, 3) // nobody reads slot 1
	for _, i := range []int{0, 2, 3} {
		setHealthy(t, s, i, false) // everything to slot 1
	}
	const n = 20
	for range n {
		c := g.client()
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitPlaced(t, s, 1, n)
	waitReceiveQueue(t, g.fds[1])

	for _, i := range []int{0, 2, 3} {
		setHealthy(t, s, i, true)
	}
	setHealthy(t, s, 1, false)
	runsBefore, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	g.close(1)
	// A datagram sent after the close is read: any datagram that the close
	// had handed on would have been queued before it.
	c := g.client()
	defer c.Close()
	if slot := g.send(c); slot == 1 {
		t.Fatalf("slot 1, closed, read a datagram")
	}
	runsAfter, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-g.got:
		t.Errorf("slot %d read a datagram from port %d that was queued on the closed socket", a.slot, a.from)
	default:
	}
	if runs := runsAfter - runsBefore; runs != 1 {
		t.Errorf("%d runs over the close and one datagram, want 1 (none for the %d queued datagrams)", runs, n)
	}
}

// waitPlaced waits, at most 5 s, until the program has placed want
// datagrams in slot.
func waitPlaced(t testing.TB, s *Steerer, slot int, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := connections(t, s, slot+1)
		if got[slot] >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %d got %d datagrams in 5s, want %d", slot, got[slot], want)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitReceiveQueue waits, at most 5 s, until a datagram waits in fd's
// receive buffer.
func waitReceiveQueue(t testing.TB, fd int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no datagram waits on fd %d after 5s", fd)
		}
		time.Sleep(time.Millisecond)
	}
}

// Requeue refuses a UDP socket, doing nothing: it has no accept queue that
// a shutdown hands on. The socket stays in the group and in the array.
func TestUDPRequeueRefused(t *testing.T) {
	s := needRequeue(t)
	g := newUDPGroup(t, 2)
	g.steer(s, 2)
	g.serve()
	setHealthy(t, s, 1, false)
	moved, err := s.Requeue(1, g.fds[1])
	t.Logf("Requeue of a UDP socket: %v", err)
	if err == nil || moved != 0 || errors.Is(err, ErrListenerLost) || !strings.Contains(err.Error(), "not a TCP listener") {
		t.Fatalf("Requeue = %d, %v; want 0 and a refusal", moved, err)
	}
	setHealthy(t, s, 0, false)
	setHealthy(t, s, 1, true)
	if got := g.spread(20); got[1] != 20 {
		t.Errorf("after the refusal slot 1 read %v, want all 20", got)
	}
}

// The kernel's own spread of datagrams over a UDP reuseport group, with no
// program: one datagram from each of 1,000 source ports over 4 sockets,
// in several rounds. It reports the max/min ratio of each round; the test
// asserts only that every socket got some.
func TestUDPKernelSpread(t *testing.T) {
	const rounds, k = 5, 1000
	var ratios []string
	for r := range rounds {
		g := newUDPGroup(t, 4)
		g.serve()
		got := g.spread(k)
		ratios = append(ratios, fmt.Sprintf("%.3f", ratio(got)))
		t.Logf("round %d: %v, max/min %.3f", r+1, got, ratio(got))
		wantOnly(t, got, 1)
		g.closeAll()
	}
	t.Logf("max/min of %d rounds of %d datagrams over 4 sockets: %v", rounds, k, ratios)
}

// SetSocket refuses a UDP socket that is not bound yet: it is in no
// reuseport group.
func TestUDPSetSocketUnbound(t *testing.T) {
	s := needSteerer(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	err = s.SetSocket(0, fd)
	t.Logf("SetSocket of an unbound UDP socket: %v", err)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetSocket of an unbound UDP socket = %v, want EINVAL", err)
	}
}
