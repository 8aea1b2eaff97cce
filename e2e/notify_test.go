package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// A flood of sd_notify datagrams from a process that is not a child (any
// local user can find the socket's name in /proc/net/unix) is dropped,
// counted and said, and does not keep a restarted child from being heard:
// its READY=1 gets through during the flood.
func TestNotifyFlood(t *testing.T) {
	t.Parallel()
	metrics := testkit.FreeAddr(t)
	m := startMaster(t, "--workers", "2", "--metrics", metrics)
	ready := m.waitReady(2)
	addr, err := testkit.NotifySocket(m.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	sent := make(chan int, 1)
	go func() {
		n := 0
		msg := []byte("READY=1\nSTATUS=flood")
		for ctx.Err() == nil {
			conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := conn.Write(msg); err == nil {
				n++
			}
		}
		sent <- n
	}()

	// The flood is on: a killed child's successor must still be heard.
	m.waitMsg(10*time.Second, 1, "dropped sd_notify datagrams over the rate limit or from another user")
	before := len(m.lines("child ready"))
	if err := killPID(ready[0]); err != nil {
		t.Fatal(err)
	}
	m.waitLog(5*time.Second, 1, "a ready successor of slot 0 during the flood", func(l logLine) bool {
		return l.msg() == "child ready" && l.int("slot") == 0 && l.int("pid") != ready[0]
	})
	if ctx.Err() != nil {
		t.Fatal("the flood ended before the successor was ready: the test shows nothing")
	}
	if got := len(m.lines("child ready")); got != before+1 {
		t.Errorf("%d child ready lines during the flood, want %d: a flooded READY=1 made a child ready", got-before, 1)
	}
	n := <-sent
	// The drops are said again once the flood is over, with the total.
	last := m.waitLog(20*time.Second, 2, "a second drop report", func(l logLine) bool {
		return l.msg() == "dropped sd_notify datagrams over the rate limit or from another user"
	})
	total := last[len(last)-1].int("dropped_total")
	t.Logf("sent %d datagrams in 4 s; the master dropped %d", n, total)
	if total <= 0 || total > n {
		t.Errorf("dropped_total = %d of %d sent", total, n)
	}
	if want := fmt.Sprintf("\nprefork_notify_dropped_total %d\n", total); !strings.Contains(scrape(t, metrics), want) {
		t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
	}
}
