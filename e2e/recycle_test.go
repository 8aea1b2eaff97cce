package e2e

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// Children recycled every few hundred accepts under load fail no request,
// in both socket modes (child mode with tcp_migrate_req=1, in a network
// namespace of the test's own), and no slot's accept counter goes down.
func TestRecycleUnderLoad(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	for _, mode := range []string{"child", "master"} {
		t.Run(mode, func(t *testing.T) {
			metricsAddr := testkit.FreeAddr(t)
			m := startMaster(t, "--workers", "4", "--sockets", mode, "--max-accepts", "300",
				"--drain-timeout", "10s", "--metrics", metricsAddr)
			m.waitReady(4)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			results := make(chan *loadResult, 2)
			for _, lm := range []loadMode{keepAlive, perRequest} {
				go func() {
					r := runLoad(ctx, m.addr, lm, 8, 2_000_000)
					r.mode = lm
					results <- r
				}()
			}
			// Until every slot was recycled twice, the counters only
			// ever go up.
			last := map[int]uint64{}
			eventually(t, 90*time.Second, "every slot recycled twice", func() bool {
				now := acceptsBySlot(t, scrape(t, metricsAddr))
				for slot, n := range last {
					if now[slot] < n {
						t.Errorf("slot %d: prefork_child_accepts_total went down from %d to %d", slot, n, now[slot])
					}
				}
				last = now
				bySlot := map[int]int{}
				for _, l := range m.lines("child recycled") {
					bySlot[l.int("slot")]++
				}
				for slot := range 4 {
					if bySlot[slot] < 2 {
						return false
					}
				}
				return true
			})
			waitServed(t, m, 100)
			cancel()
			assertNoFailures(t, "recycling every ~300 accepts", <-results, <-results)
			recycled := m.lines("child recycled")
			t.Logf("%d children recycled", len(recycled))
			for _, l := range recycled {
				if l.str("reason") != "max_accepts" {
					t.Errorf("recycled for %q, want max_accepts: %v", l.str("reason"), l)
				}
			}
			// The metric counts every recycle the log reported (more may
			// have finished between the two reads).
			if got := recyclesTotal(t, scrape(t, metricsAddr), "max_accepts"); got < len(recycled) {
				t.Errorf("prefork_child_recycles_total{reason=max_accepts} sums to %d, the log has %d", got, len(recycled))
			}
			assertSuccessorReadyFirst(t, m)
		})
	}
}

// --max-rss recycles a child whose resident memory passed the limit; with
// a limit below any Go program's, every child is recycled in turn, and
// every slot has a ready child all along (/readyz, polled throughout,
// never says otherwise).
func TestRecycleMaxRSS(t *testing.T) {
	t.Parallel()
	metricsAddr := testkit.FreeAddr(t)
	m := startMaster(t, "--workers", "2", "--max-rss", "1MiB", "--metrics", metricsAddr)
	m.waitReady(2)
	stop := make(chan struct{})
	var once sync.Once
	stopPolling := func() { once.Do(func() { close(stop) }) }
	t.Cleanup(stopPolling)
	polled := make(chan [2]int, 1) // probes, and those not 200
	client := &http.Client{Timeout: 5 * time.Second}
	go func() {
		var n, bad int
		for {
			select {
			case <-stop:
				polled <- [2]int{n, bad}
				return
			case <-time.After(10 * time.Millisecond):
			}
			n++
			resp, err := client.Get("http://" + metricsAddr + "/readyz")
			if err != nil {
				bad++
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				bad++
			}
		}
	}()
	m.waitLog(30*time.Second, 4, "4 recycles for max_rss", func(l logLine) bool {
		return l.msg() == "child recycled" && l.str("reason") == "max_rss"
	})
	stopPolling()
	if p := <-polled; p[1] != 0 || p[0] < 10 {
		t.Errorf("/readyz was not 200 %d times of %d while recycling", p[1], p[0])
	}
	if got := recyclesTotal(t, scrape(t, metricsAddr), "max_rss"); got < 4 {
		t.Errorf("prefork_child_recycles_total{reason=max_rss} sums to %d, want at least 4", got)
	}
	if n := len(m.lines("child exited unexpectedly")); n != 0 {
		t.Errorf("%d unexpected exits while recycling", n)
	}
	assertSuccessorReadyFirst(t, m)
}

// assertSuccessorReadyFirst checks, from the order of the log, that no
// recycled child exited before its successor was ready: it was drained
// only after.
func assertSuccessorReadyFirst(t *testing.T, m *master) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	readyAt, exitAt := map[int]int{}, map[int]int{}
	for i, l := range m.logs {
		switch l.msg() {
		case "child ready":
			readyAt[l.int("pid")] = i
		case "child exited":
			exitAt[l.int("pid")] = i
		}
	}
	for _, l := range m.logs {
		if l.msg() != "child recycled" {
			continue
		}
		old, succ := l.int("old_pid"), l.int("pid")
		ready, ok := readyAt[succ]
		if !ok {
			t.Errorf("successor %d of recycled child %d never logged ready", succ, old)
			continue
		}
		if exit, ok := exitAt[old]; ok && exit < ready {
			t.Errorf("slot %d: old child %d exited before its successor %d was ready", l.int("slot"), old, succ)
		}
	}
}

var recyclesRE = regexp.MustCompile(`(?m)^prefork_child_recycles_total\{reason="([a-z_]+)",slot="\d+"\} (\d+)$`)

// recyclesTotal sums prefork_child_recycles_total over the slots for one
// reason.
func recyclesTotal(t *testing.T, text, reason string) int {
	t.Helper()
	sum, seen := 0, false
	for _, m := range recyclesRE.FindAllStringSubmatch(text, -1) {
		if m[1] != reason {
			continue
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			t.Fatal(err)
		}
		sum, seen = sum+n, true
	}
	if !seen {
		t.Fatalf("no prefork_child_recycles_total{reason=%q} in the scrape:\n%s", reason,
			grepLines(text, "recycles"))
	}
	return sum
}
