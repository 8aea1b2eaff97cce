package steer

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Runs counts the connections the program chose for, and stands still
// once another program replaced it on the group.
func TestRuns(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 2)
	g.steer(s, 2)
	g.serve()
	runs := func() uint64 {
		t.Helper()
		n, err := s.Runs()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := runs()
	g.connect(100)
	// A SYN sent again runs it again: at least one run per connection.
	if got := runs() - before; got < 100 || got > 120 {
		t.Errorf("%d runs for 100 connections", got)
	}
	ret0 := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := unix.SetsockoptSockFprog(g.fds[1], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: 1, Filter: &ret0[0]}); err != nil {
		t.Fatal(err)
	}
	before = runs()
	if got := g.connect(50); got[0] != 50 {
		t.Errorf("the classic program sent %v, want all to slot 0", got)
	}
	if got := runs() - before; got != 0 {
		t.Errorf("%d runs after the program was replaced", got)
	}
	if err := s.Attach(g.fds[0]); err != nil {
		t.Fatal(err)
	}
	before = runs()
	g.connect(20)
	if got := runs() - before; got < 20 {
		t.Errorf("%d runs for 20 connections once attached again", got)
	}
	s.Close()
	if _, err := s.Runs(); err == nil {
		t.Error("Runs of a closed steerer")
	}
}
