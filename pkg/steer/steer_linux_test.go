package steer

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

func TestSupported(t *testing.T) {
	needSteerer(t) // skips where it cannot load
	if err := Supported(); err != nil {
		t.Fatalf("Supported() = %v after Load succeeded", err)
	}
}

// With every slot healthy the spread is the kernel's: 10,000 connections
// over 4 slots (2,500 ± 43 each), steered and not, in the same test. The
// bound compares max/min ratios, typically 1.03-1.06 either way; a broken
// choice (one slot starved, or the hash folded onto fewer slots) gives a
// ratio of 1.3 and more.
func TestSpread(t *testing.T) {
	s := needSteerer(t)
	steered, plain := newGroup(t, 4), newGroup(t, 4)
	steered.steer(s, 4)
	steered.serve()
	plain.serve()

	const k = 10000
	sc, pc := steered.connect(k), plain.connect(k)
	rs, rp := ratio(sc), ratio(pc)
	t.Logf("steered %v max/min %.3f; kernel %v max/min %.3f", sc, rs, pc, rp)
	if sum(sc) != k || sum(pc) != k {
		t.Errorf("accepted %d steered and %d plain, want %d each", sum(sc), sum(pc), k)
	}
	wantOnly(t, sc, 1)
	if bound := rp*1.1 + 0.05; rs > bound {
		t.Errorf("steered max/min %.3f > %.3f (the kernel's %.3f * 1.1 + 0.05)", rs, bound, rp)
	}
}

// The program's pick for a healthy group is the kernel's own, connection by
// connection: the same client ports land on the same slots once the
// program is detached.
func TestSameChoiceAsKernel(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.abort = true // no TIME_WAIT: the same 4-tuples connect again
	g.steer(s, 4)
	g.serve()

	const k = 400
	ports, steered := make([]int, k), make([]int, k)
	for i := range k {
		var err error
		if ports[i], steered[i], err = g.roundTrip(0); err != nil {
			t.Fatal(err)
		}
	}
	if err := Detach(g.fds[0]); err != nil {
		t.Fatal(err)
	}
	differ, taken := 0, 0
	for i, port := range ports {
		_, slot, err := g.roundTrip(port)
		if errors.Is(err, unix.EADDRINUSE) {
			taken++ // another process connected from that port meanwhile
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if slot != steered[i] {
			differ++
		}
	}
	t.Logf("%d of %d connections went to the same slot with and without the program (%d ports taken meanwhile)", k-taken-differ, k-taken, taken)
	if differ != 0 || taken > k/2 {
		t.Errorf("%d of %d connections went elsewhere without the program", differ, k-taken)
	}
}

// An unhealthy slot gets nothing and its share is spread evenly over the
// others (667 ± 21 each of 2,000: a ratio of 1.4 is 5 standard deviations
// away, while sending the share to one neighbour would give 2); healthy
// again, it gets its share back.
func TestUnhealthy(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()

	if err := s.SetHealthy(2, false); err != nil {
		t.Fatal(err)
	}
	c := g.connect(2000)
	others := []int64{c[0], c[1], c[3]}
	t.Logf("slot 2 unhealthy: %v, max/min of the others %.3f", c, ratio(others))
	wantOnly(t, c, 400, 2)
	if r := ratio(others); r > 1.4 {
		t.Errorf("the other slots' max/min is %.3f > 1.4: slot 2's share was not spread evenly (%v)", r, c)
	}

	if err := s.SetHealthy(2, true); err != nil {
		t.Fatal(err)
	}
	c = g.connect(2000)
	t.Logf("slot 2 healthy again: %v", c)
	wantOnly(t, c, 250)
}

// With no healthy slot the kernel chooses: every connection succeeds, and
// every slot gets some (100 expected each).
func TestAllUnhealthy(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()
	for i := range 4 {
		if err := s.SetHealthy(i, false); err != nil {
			t.Fatal(err)
		}
	}
	c := g.connect(400)
	t.Logf("all unhealthy: %v", c)
	wantOnly(t, c, 20)
}

// Slots from n on get nothing, sockets or not; n = 0 is the kernel's hash.
func TestSetSlots(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()

	if err := s.SetSlots(3); err != nil {
		t.Fatal(err)
	}
	c := g.connect(1500)
	t.Logf("3 active slots: %v", c)
	wantOnly(t, c, 300, 3)

	if err := s.SetSlots(0); err != nil {
		t.Fatal(err)
	}
	c = g.connect(800)
	t.Logf("no active slot: %v", c)
	wantOnly(t, c, 80)

	if err := s.SetSlots(MaxSlots + 1); err == nil {
		t.Error("SetSlots(MaxSlots+1) succeeded")
	}
}

// A healthy slot without a socket in the array: its connections go to
// other slots instead of failing; with its socket back it gets them again.
func TestClearSocket(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()

	for range 2 { // clearing twice is no error
		if err := s.ClearSocket(1); err != nil {
			t.Fatal(err)
		}
	}
	c := g.connect(2000)
	t.Logf("slot 1 cleared: %v", c)
	wantOnly(t, c, 300, 1)

	if err := s.SetSocket(1, g.fds[1]); err != nil {
		t.Fatal(err)
	}
	c = g.connect(2000)
	t.Logf("slot 1 back: %v", c)
	wantOnly(t, c, 250)
}

// The program belongs to the group, not to the socket it was attached
// through: closing that socket leaves it in force, takes the socket out
// of the array by itself, and a socket that joins later is steered too.
func TestAttachSocketClosed(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4) // attached through slot 0's socket
	g.serve()

	g.close(0)
	var cookie uint64
	if err := s.maps.sockets.Lookup(uint32(0), &cookie); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("slot 0's closed socket is still in the array: cookie %d, %v", cookie, err)
	}
	if err := s.maps.sockets.Lookup(uint32(1), &cookie); err != nil {
		t.Errorf("slot 1's socket left the array: %v", err)
	}

	// Still steered: without the program slot 2 would get a third.
	if err := s.SetHealthy(2, false); err != nil {
		t.Fatal(err)
	}
	c := g.connect(1500)
	t.Logf("slot 0 closed, slot 2 unhealthy: %v", c)
	wantOnly(t, c, 300, 0, 2)

	// Scale up: a new listener joins the group and the array.
	slot := g.add()
	g.serve(slot)
	if err := s.SetSocket(slot, g.fds[slot]); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHealthy(slot, true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSlots(slot + 1); err != nil {
		t.Fatal(err)
	}
	c = g.connect(2000)
	t.Logf("slot %d added: %v", slot, c)
	wantOnly(t, c, 200, 0, 2)
}

// Closing a listener whose accept queue holds connections (a slot removed
// while its child was not accepting, or the last holder of the socket
// crashed): with the program attached they move to the other listeners,
// with net.ipv4.tcp_migrate_req=0 (at 1 the kernel would move them
// without the program, so both cases are skipped). Without the program
// they are reset.
func TestCloseMigratesQueue(t *testing.T) {
	s := needSteerer(t)
	migrate, err := sockopt.MigrateReq()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("net.ipv4.tcp_migrate_req = %v", migrate)

	t.Run("steered", func(t *testing.T) {
		if migrate {
			t.Skip("tcp_migrate_req=1 migrates without the program: the test would prove nothing")
		}
		if !s.Migrates() {
			t.Skip("the kernel does not run the program for migrating connections (Linux 5.14+)")
		}
		g := newGroup(t, 4)
		g.steer(s, 4)
		lost := closeQueued(t, g, func() {
			if err := s.SetSlots(3); err != nil {
				t.Fatal(err)
			}
		})
		if lost != 0 {
			t.Errorf("%d queued connections were reset when their listener closed", lost)
		}
	})
	t.Run("plain", func(t *testing.T) {
		if migrate {
			t.Skip("tcp_migrate_req=1 migrates without the program")
		}
		g := newGroup(t, 4)
		if lost := closeQueued(t, g, func() {}); lost == 0 {
			t.Error("no queued connection was reset without the program: the steered case proves nothing")
		}
	})
}

// closeQueued serves slots 0-2 of g, connects until slot 3's accept queue
// holds at least 20 connections, calls before, closes slot 3's listener,
// and returns how many of the connections were reset rather than served.
func closeQueued(t *testing.T, g *group, before func()) (lost int) {
	g.serve(0, 1, 2)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for queued := uint32(0); queued < 20; {
		if len(conns) >= 1000 {
			t.Fatalf("slot 3 has %d queued of %d connections", queued, len(conns))
		}
		for range 50 {
			c, err := net.DialTimeout("tcp", g.lns[0].Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if err := hello(c); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if queued, err = waitQueue(g.fds[3]); err != nil {
			t.Fatal(err)
		}
	}
	before()
	g.close(3)
	for _, c := range conns {
		if err := waitServerClose(c, false); err != nil {
			if !errors.Is(err, unix.ECONNRESET) {
				t.Fatal(err)
			}
			lost++
		}
	}
	t.Logf("%d connections, %d reset; accepted per slot %v", len(conns), lost, g.snapshot())
	return lost
}

// waitQueue returns the accept queue of fd once it stops growing (the
// handshakes of the last dials complete a moment after Dial returns).
func waitQueue(fd int) (uint32, error) {
	last := ^uint32(0)
	for range 100 {
		q, _, err := sockopt.AcceptQueue(fd)
		if err != nil || q == last {
			return q, err
		}
		last = q
		time.Sleep(10 * time.Millisecond)
	}
	return last, nil
}

// Close leaves the program attached but inert: the kernel's hash decides
// again, even for a slot that was unhealthy; Detach then removes it.
func TestCloseLeavesKernelChoice(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()
	if err := s.SetHealthy(2, false); err != nil {
		t.Fatal(err)
	}
	wantOnly(t, g.connect(600), 100, 2)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSlots(4); err == nil {
		t.Error("SetSlots after Close succeeded")
	}
	c := g.connect(800)
	t.Logf("after Close: %v", c)
	wantOnly(t, c, 80)

	if err := Detach(g.fds[1]); err != nil {
		t.Errorf("Detach after Close: %v, want the program still attached", err)
	}
	if err := Detach(g.fds[1]); !errors.Is(err, unix.ENOENT) {
		t.Errorf("second Detach: %v, want ENOENT", err)
	}
}

func TestBadSockets(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 1)

	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	plain, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plainFD := fdOf(t, plain.(*net.TCPListener))
	mptcp, err := sockopt.Listen(context.Background(), "127.0.0.1:0") // Go's default, MPTCP where it can
	if err != nil {
		t.Fatal(err)
	}
	defer mptcp.Close()
	mptcpFD := fdOf(t, mptcp.(*net.TCPListener))
	unbound, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unbound)

	type badCase struct {
		name    string
		err     error
		wantMsg string
	}
	tests := []badCase{
		{name: "slot out of range", err: s.SetSocket(MaxSlots, g.fds[0]), wantMsg: "out of range"},
		{name: "negative slot", err: s.SetHealthy(-1, true), wantMsg: "out of range"},
		{name: "not SO_REUSEPORT", err: s.SetSocket(0, plainFD), wantMsg: "not a listening SO_REUSEPORT socket"},
		{name: "not listening", err: s.SetSocket(0, unbound), wantMsg: "not a listening SO_REUSEPORT socket"},
		{name: "attach without SO_REUSEPORT", err: s.Attach(plainFD), wantMsg: "not a SO_REUSEPORT socket"},
	}
	if isMPTCP(mptcpFD) {
		tests = append(tests,
			badCase{name: "MPTCP socket", err: s.SetSocket(0, mptcpFD), wantMsg: "MPTCP"},
			badCase{name: "attach to MPTCP", err: s.Attach(mptcpFD), wantMsg: "MPTCP"},
		)
	} else {
		t.Log("no MPTCP here: the MPTCP cases are not tried")
	}
	for _, tt := range tests {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.wantMsg) {
			t.Errorf("%s: %v, want an error saying %q", tt.name, tt.err, tt.wantMsg)
		}
	}

	// A socket can be in one array only: one Steerer per group.
	if err := s.SetSocket(0, g.fds[0]); err != nil {
		t.Fatal(err)
	}
	other, err := Load(4)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.SetSocket(0, g.fds[0]); !errors.Is(err, unix.EBUSY) {
		t.Errorf("the same socket in a second array: %v, want EBUSY", err)
	}
}

// The cost of the program on the connection path: connect, accept, close,
// without it, with it and every slot healthy, and with slot 2 unhealthy (a
// quarter of the connections take the spares path), in one process. The
// steered cases also report the program's own run time per connection, as
// the kernel measures it (BPF_ENABLE_STATS, Linux 5.8+).
func BenchmarkConnect(b *testing.B) {
	for _, bc := range []struct {
		name      string
		steer     bool
		unhealthy int // -1: none
	}{
		{name: "plain", unhealthy: -1},
		{name: "steer", steer: true, unhealthy: -1},
		{name: "steer-unhealthy", steer: true, unhealthy: 2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := newGroup(b, 4)
			g.abort = true // no TIME_WAIT piling up over b.N connections
			var s *Steerer
			if bc.steer {
				s = needSteerer(b)
				g.steer(s, 4)
				if bc.unhealthy >= 0 {
					if err := s.SetHealthy(bc.unhealthy, false); err != nil {
						b.Fatal(err)
					}
				}
			} else if os.Geteuid() != 0 {
				b.Skip("compared with the steered case, which needs root")
			}
			g.serve()
			if s != nil {
				if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
					defer stats.Close()
				}
			}
			for b.Loop() {
				if _, _, err := g.roundTrip(0); err != nil {
					b.Fatal(err)
				}
			}
			if s != nil {
				reportRunTime(b, s)
			}
		})
	}
}

// reportRunTime reports the kernel's count of the program's run time per
// run, when the kernel kept it.
func reportRunTime(b *testing.B, s *Steerer) {
	st, err := s.prog.Stats()
	if err == nil && st.RunCount > 0 {
		b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), "ns/prog-run")
	}
}
