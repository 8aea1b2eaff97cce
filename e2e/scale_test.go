package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// Scaling live under load, up and down, fails no request (child mode with
// tcp_migrate_req=1, in a network namespace of the test's own), leaves
// exactly the slots 0..N-1, and no slot's accept counter goes down.
func TestScaleUnderLoad(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	metricsAddr := testkit.FreeAddr(t)
	m := startMaster(t, "--workers", "2", "--drain-timeout", "10s", "--metrics", metricsAddr)
	m.waitReady(2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results := make(chan *loadResult, 2)
	for _, mode := range []loadMode{keepAlive, perRequest} {
		go func() {
			r := runLoad(ctx, m.addr, mode, 8, 2_000_000)
			r.mode = mode
			results <- r
		}()
	}
	last := map[int]uint64{}
	for _, n := range []int{4, 1, 3} {
		waitServed(t, m, 100)
		code, out, errOut := m.ctl("scale", fmt.Sprint(n))
		if code != 0 || strings.TrimSpace(out) != fmt.Sprintf("%d workers", n) {
			t.Fatalf("master scale %d: exit %d %q %q", n, code, out, errOut)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("exactly slots 0..%d ready, none draining", n-1), func() bool {
			st := m.status()
			if st.Workers != n || !st.settled(1, n) {
				return false
			}
			for i, c := range st.Children {
				if c.Slot != i {
					return false
				}
			}
			return true
		})
		now := acceptsBySlot(t, scrape(t, metricsAddr))
		for slot, n := range last {
			if now[slot] < n {
				t.Errorf("slot %d: prefork_child_accepts_total went down from %d to %d", slot, n, now[slot])
			}
		}
		last = now
	}
	waitServed(t, m, 100)
	cancel()
	assertNoFailures(t, "scale 2 -> 4 -> 1 -> 3", <-results, <-results)
}

// master scale refuses what is not a whole number of at least 1, in one
// line, and changes nothing.
func TestScaleBadInput(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "2")
	m.waitReady(2)
	for _, args := range [][]string{{"0"}, {"--", "-1"}, {"abc"}, {""}, {}} {
		code, _, errOut := m.ctl(append([]string{"scale"}, args...)...)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "workers") {
			t.Errorf("master scale %q: exit %d, stderr %q; want 2 and one line", args, code, errOut)
		}
	}
	if st := m.status(); st.Workers != 2 {
		t.Errorf("workers %d after refused scales, want 2", st.Workers)
	}
}
