package e2e

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// N children with N distinct pids, each answering for its own slot, and the
// kernel spreading new connections over all of them.
func TestServesFromNChildren(t *testing.T) {
	t.Parallel()
	const n = 4
	m := startMaster(t, "--workers", "4")
	ready := m.waitReady(n)
	pids := map[int]bool{}
	for _, pid := range ready {
		pids[pid] = true
	}
	if len(pids) != n {
		t.Fatalf("ready children by slot = %v, want %d distinct pids", ready, n)
	}
	kids := testkit.ChildrenOf(m.cmd.Process.Pid)
	slices.Sort(kids)
	for pid := range pids {
		if _, found := slices.BinarySearch(kids, pid); !found {
			t.Errorf("ready pid %d is not a child of the master (children %v)", pid, kids)
		}
	}

	perSlot := map[int]int{}
	for range 1000 {
		w, err := getWhoami(m.addr)
		if err != nil {
			t.Fatal(err)
		}
		if ready[w.Slot] != w.PID || w.Generation != 1 {
			t.Fatalf("whoami %+v does not match the ready child of slot %d (pid %d, generation 1)", w, w.Slot, ready[w.Slot])
		}
		perSlot[w.Slot]++
	}
	t.Logf("1000 connections per slot: %v", perSlot)
	for slot := range n {
		if perSlot[slot] == 0 {
			t.Errorf("slot %d got none of 1000 connections: %v", slot, perSlot)
		}
	}
}

// kill -9 of one child: a new child with a new pid serves that slot, the
// others keep their pids, and requests to the others never fail meanwhile.
func TestCrashedChildIsReplaced(t *testing.T) {
	t.Parallel()
	const n = 3
	m := startMaster(t, "--workers", "3")
	ready := m.waitReady(n)

	// Keep-alive connections that each reach a child other than slot 0's,
	// hammered while slot 0 dies and comes back.
	victim := ready[0]
	conns := dialOthers(t, m.addr, victim, 8)
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan error, len(conns))
	for _, c := range conns {
		go func() { results <- hammer(ctx, c) }()
	}

	if err := killPID(victim); err != nil {
		t.Fatal(err)
	}
	lines := m.waitLog(20*time.Second, 1, "a new ready child in slot 0", func(l logLine) bool {
		return l.msg() == "child ready" && l.int("slot") == 0 && l.int("pid") != victim
	})
	cancel()
	for range conns {
		if err := <-results; err != nil {
			t.Errorf("a request to another child failed while slot 0 restarted: %v", err)
		}
	}
	replacement := lines[0].int("pid")
	eventually(t, 10*time.Second, "the replacement answers for slot 0", func() bool {
		w, err := getWhoami(m.addr)
		return err == nil && w.Slot == 0 && w.PID == replacement
	})
	exits := m.lines("child exited unexpectedly")
	if len(exits) != 1 || exits[0].int("pid") != victim || exits[0].str("signal") != "SIGKILL" {
		t.Errorf("exit log lines = %v, want one for pid %d with signal SIGKILL", exits, victim)
	}
	// The others kept their pids: no other child started.
	if started := m.lines("child started"); len(started) != n+1 {
		t.Errorf("%d children started, want %d (n plus the replacement)", len(started), n+1)
	}
	for slot := 1; slot < n; slot++ {
		if !testkit.Alive(ready[slot]) {
			t.Errorf("slot %d's child %d is gone", slot, ready[slot])
		}
	}
}

// dialOthers opens n keep-alive connections that reach a child other than
// pid, closing those that reach it.
func dialOthers(t *testing.T, addr string, pid, n int) []*keptConn {
	t.Helper()
	var conns []*keptConn
	for tries := 0; len(conns) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("could not open %d connections to children other than %d", n, pid)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		kc := &keptConn{Conn: c, br: bufio.NewReader(c)}
		w, err := kc.whoami()
		if err != nil {
			t.Fatal(err)
		}
		if w.PID == pid {
			c.Close()
			continue
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, kc)
	}
	return conns
}

// keptConn is a keep-alive HTTP/1.1 connection.
type keptConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *keptConn) whoami() (whoami, error) {
	var w whoami
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET /whoami HTTP/1.1\r\nHost: prefork\r\n\r\n")); err != nil {
		return w, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	return w, decodeJSON(resp.Body, &w)
}

// hammer sends requests on c until ctx is done (at most 100,000) and
// returns the first failure.
func hammer(ctx context.Context, c *keptConn) error {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		if _, err := testkit.RoundTrip(c.Conn, c.br, false); err != nil {
			return err
		}
	}
	return nil
}
