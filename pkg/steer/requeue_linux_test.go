package steer

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// needRequeue is needSteerer for the tests of Requeue: it skips where the
// program does not migrate, and where net.ipv4.tcp_migrate_req=1, which
// moves a closing listener's queue without the program, so that a test
// would not show the program's part.
func needRequeue(t testing.TB) *Steerer {
	t.Helper()
	s := needSteerer(t)
	if !s.Migrates() {
		t.Skip("the kernel does not run the program for migrating connections (Linux 5.14+)")
	}
	migrate, err := sockopt.MigrateReq()
	if err != nil {
		t.Fatal(err)
	}
	if migrate {
		t.Skip("net.ipv4.tcp_migrate_req=1 moves queues without the program: the test would prove nothing")
	}
	return s
}

// stuckGroup makes a group of two steered listeners where slot stuck
// (0 or 1) has n connections in its accept queue, nobody accepting on it,
// and the other slot serves: the state the supervisor finds when the
// child of slot stuck is stopped. Every connection has sent its byte;
// they are closed at the end of the test.
func stuckGroup(t testing.TB, s *Steerer, stuck, n int) (*group, []net.Conn) {
	t.Helper()
	g := newGroup(t, 2)
	g.echo = true
	g.steer(s, 2)
	other := 1 - stuck
	setHealthy(t, s, other, false) // every new connection goes to stuck
	g.serve(other)
	conns := queueOn(t, g, stuck, n)
	setHealthy(t, s, other, true) // the stuck slot is noticed
	setHealthy(t, s, stuck, false)
	return g, conns
}

func setHealthy(t testing.TB, s *Steerer, slot int, healthy bool) {
	t.Helper()
	if err := s.SetHealthy(slot, healthy); err != nil {
		t.Fatal(err)
	}
}

// queueOn opens n connections to g, which must all go to slot, each
// sending its byte, and waits until slot's accept queue holds them all.
func queueOn(t testing.TB, g *group, slot, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if err := hello(c); err != nil {
			t.Fatal(err)
		}
	}
	waitQueued(t, g.fds[slot], uint32(n))
	return conns
}

// waitQueued polls fd's accept queue until it holds want connections (Dial
// returns on the SYN-ACK; the server queues the connection when the last
// ACK arrives, a moment later), and returns the backlog.
func waitQueued(t testing.TB, fd int, want uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, backlog, err := sockopt.AcceptQueue(fd)
		if err != nil {
			t.Fatal(err)
		}
		if q == want {
			return backlog
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept queue of fd %d = %d after 5s, want %d", fd, q, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// answers waits for the server's answer on every connection and returns
// how many were reset instead; any other failure fails the test.
func answers(t testing.TB, g *group, conns []net.Conn) (reset int) {
	t.Helper()
	for _, c := range conns {
		err := g.answered(c)
		if errors.Is(err, unix.ECONNRESET) {
			reset++
		} else if err != nil {
			t.Fatalf("connection from %v: %v", c.LocalAddr(), err)
		}
	}
	return reset
}

// Requeue moves every connection queued on a stuck slot to the healthy
// one, where each is accepted and answered, and none is reset; the slot
// keeps its listener, port and backlog, and takes connections again on
// the same descriptor once it is healthy.
func TestRequeue(t *testing.T) {
	const n = 40
	s := needRequeue(t)
	g := newGroup(t, 2)
	g.echo = true
	g.steer(s, 2)
	setHealthy(t, s, 0, false)
	g.serve(0)
	// A child's own listen() set the backlog; Requeue must keep it.
	if err := unix.Listen(g.fds[1], 64); err != nil {
		t.Fatal(err)
	}
	conns := queueOn(t, g, 1, n)
	setHealthy(t, s, 0, true)
	setHealthy(t, s, 1, false)

	moved, err := s.Requeue(1, g.fds[1])
	if err != nil {
		t.Fatal(err)
	}
	reset := answers(t, g, conns)
	counts := g.snapshot()
	t.Logf("moved %d of %d queued; accepted per slot %v, %d reset", moved, n, counts, reset)
	if moved != n || reset != 0 || counts[0] != n || counts[1] != 0 {
		t.Errorf("moved %d, accepted %v, %d reset; want %d moved, all accepted by slot 0, 0 reset", moved, counts, reset, n)
	}
	if q, backlog, err := sockopt.AcceptQueue(g.fds[1]); err != nil || q != 0 || backlog != 64 {
		t.Errorf("slot 1 after Requeue: queue %d, backlog %d, %v; want listening, 0, 64", q, backlog, err)
	}
	if port, err := localPort(g.fds[1]); err != nil || port != g.port {
		t.Errorf("slot 1 listens on port %d (%v) after Requeue, want %d", port, err, g.port)
	}

	// The slot's next child accepts on the same descriptor.
	setHealthy(t, s, 1, true)
	setHealthy(t, s, 0, false)
	g.serve(1)
	c := g.connect(20)
	t.Logf("slot 0 unhealthy: %v", c)
	wantOnly(t, c, 20, 0)
	setHealthy(t, s, 0, true)
	c = g.connect(200)
	t.Logf("both healthy: %v", c)
	wantOnly(t, c, 40)
}

// Requeue refuses what it cannot do without losing or misplacing
// connections, and then leaves the queue and the array as they were.
func TestRequeueRefuses(t *testing.T) {
	const n = 10
	s := needRequeue(t)
	g, conns := stuckGroup(t, s, 1, n)
	for _, tc := range []struct {
		name        string
		slot, fd    int
		setup, undo func()
		want        error
	}{
		{name: "slot out of range", slot: MaxSlots, fd: g.fds[1]},
		{name: "another slot's socket", slot: 1, fd: g.fds[0]},
		{
			name: "socket not in the array", slot: 1, fd: g.fds[1],
			setup: func() {
				if err := s.ClearSocket(1); err != nil {
					t.Fatal(err)
				}
			},
			undo: func() {
				if err := s.SetSocket(1, g.fds[1]); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "no healthy slot to take the queue", slot: 1, fd: g.fds[1],
			setup: func() { setHealthy(t, s, 0, false) },
			undo:  func() { setHealthy(t, s, 0, true) },
		},
		{
			name: "healthy slot without socket", slot: 1, fd: g.fds[1],
			setup: func() {
				if err := s.ClearSocket(0); err != nil {
					t.Fatal(err)
				}
			},
			undo: func() {
				if err := s.SetSocket(0, g.fds[0]); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "program does not migrate", slot: 1, fd: g.fds[1], want: ErrNotMigrating,
			setup: func() { s.migrates = false },
			undo:  func() { s.migrates = true },
		},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		moved, err := s.Requeue(tc.slot, tc.fd)
		if tc.undo != nil {
			tc.undo()
		}
		t.Logf("%s: %v", tc.name, err)
		if err == nil || moved != 0 || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Requeue = %d, %v; want 0 and an error (%v)", tc.name, moved, err, tc.want)
		}
		if q, _, err := sockopt.AcceptQueue(g.fds[1]); err != nil || q != n {
			t.Fatalf("%s: queue of slot 1 = %d, %v after the refusal, want %d", tc.name, q, err, n)
		}
	}
	s.mu.Lock()
	err := s.isSocket(1, g.fds[1])
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if moved, err := s.Requeue(1, g.fds[1]); err != nil || moved != n {
		t.Fatalf("Requeue after the refusals = %d, %v; want %d", moved, err, n)
	}
	if reset := answers(t, g, conns); reset != 0 {
		t.Errorf("%d of %d connections reset", reset, n)
	}
}

// selectOnly gives s the select-only program that Load falls back to on a
// kernel that cannot load the migrating one: Migrates is then false.
func selectOnly(t testing.TB, s *Steerer) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maps.migrating = false
	prog, err := ebpf.NewProgram(s.programSpec())
	if err != nil {
		t.Fatal(err)
	}
	s.prog.Close()
	s.prog, s.migrates = prog, false
}

// A Steerer whose program does not migrate refuses Requeue, and the
// queue stays whole for the slot's own child; what Requeue would do, a
// shutdown, resets that queue (tcp_migrate_req being 0).
func TestRequeueNotMigrating(t *testing.T) {
	const n = 40
	s := needRequeue(t)
	selectOnly(t, s)
	g, conns := stuckGroup(t, s, 1, n)
	moved, err := s.Requeue(1, g.fds[1])
	t.Logf("Requeue: %v", err)
	if !errors.Is(err, ErrNotMigrating) || moved != 0 {
		t.Fatalf("Requeue = %d, %v; want 0, ErrNotMigrating", moved, err)
	}
	if q, _, err := sockopt.AcceptQueue(g.fds[1]); err != nil || q != n {
		t.Fatalf("queue of slot 1 = %d, %v after the refusal, want %d", q, err, n)
	}
	g.serve(1)
	reset := answers(t, g, conns)
	if counts := g.snapshot(); reset != 0 || counts[1] != n {
		t.Errorf("accepted per slot %v, %d reset; want %d on slot 1, 0 reset", counts, reset, n)
	}

	g, conns = stuckGroup(t, s, 1, n)
	if err := unix.Shutdown(g.fds[1], unix.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	reset = answers(t, g, conns)
	t.Logf("shutdown with the select-only program: %d of %d reset", reset, n)
	if reset != n {
		t.Errorf("shutdown with the select-only program reset %d of %d queued connections, want all: the refusal proves nothing", reset, n)
	}
}

// A listener bound to port 0 loses its port on shutdown and listens on a
// new one: Requeue moves its queue, then says the listener is lost.
func TestRequeuePortZero(t *testing.T) {
	const n = 20
	s := needRequeue(t)
	g, conns := stuckGroup(t, s, 0, n) // slot 0 was bound to port 0
	moved, err := s.Requeue(0, g.fds[0])
	t.Logf("Requeue: %v", err)
	if !errors.Is(err, ErrListenerLost) || moved != n {
		t.Fatalf("Requeue = %d, %v; want %d, ErrListenerLost", moved, err, n)
	}
	reset := answers(t, g, conns)
	if counts := g.snapshot(); reset != 0 || counts[1] != n {
		t.Errorf("accepted per slot %v, %d reset; want %d on slot 1, 0 reset", counts, reset, n)
	}
	if port, err := localPort(g.fds[0]); err != nil || port == g.port {
		t.Errorf("slot 0 listens on port %d (%v), want another port than %d", port, err, g.port)
	}
}

// The cost of Requeue with an empty queue and with 32 connections moved,
// per call; setting the queue up and serving it is not counted.
func BenchmarkRequeue(b *testing.B) {
	for _, queued := range []int{0, 32} {
		b.Run(fmt.Sprintf("queue=%d", queued), func(b *testing.B) {
			s := needRequeue(b)
			g := newGroup(b, 2)
			g.abort = true // no TIME_WAIT piling up over b.N rounds
			g.steer(s, 2)
			g.serve(0)
			for range b.N {
				b.StopTimer()
				setHealthy(b, s, 0, false)
				setHealthy(b, s, 1, true)
				conns := queueOn(b, g, 1, queued)
				setHealthy(b, s, 0, true)
				setHealthy(b, s, 1, false)
				b.StartTimer()
				moved, err := s.Requeue(1, g.fds[1])
				b.StopTimer()
				if err != nil || moved != uint32(queued) {
					b.Fatalf("Requeue = %d, %v; want %d", moved, err, queued)
				}
				if reset := answers(b, g, conns); reset != 0 {
					b.Fatalf("%d reset", reset)
				}
				for _, c := range conns {
					c.Close()
				}
				b.StartTimer()
			}
		})
	}
}
