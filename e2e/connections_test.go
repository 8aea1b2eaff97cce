package e2e

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

var (
	connectionsLine = regexp.MustCompile(`(?m)^prefork_child_connections_total\{slot="(\d+)"\} (\d+)$`)
	unplacedLine    = regexp.MustCompile(`(?m)^prefork_steer_unplaced_connections_total (\d+)$`)
)

// connectionsBySlot returns prefork_child_connections_total by slot, and
// prefork_steer_unplaced_connections_total (-1 when absent).
func connectionsBySlot(text string) (map[int]uint64, int64) {
	got := map[int]uint64{}
	for _, m := range connectionsLine.FindAllStringSubmatch(text, -1) {
		slot, _ := strconv.Atoi(m[1])
		n, _ := strconv.ParseUint(m[2], 10, 64)
		got[slot] = n
	}
	unplaced := int64(-1)
	if m := unplacedLine.FindStringSubmatch(text); m != nil {
		unplaced, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return got, unplaced
}

// With steering on, in both socket modes (in child socket mode through
// the master's copies of the children's listeners), the program's count
// of the new connections it placed in each slot equals, to the unit, the
// connections the slot's child accepted by its own count. Without
// steering the series are absent.
func TestConnectionsEqualAccepts(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"master", "child"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			connectionsEqualAccepts(t, mode)
		})
	}
	off := testkit.FreeAddr(t)
	m2 := startMaster(t, "--workers", "2", "--sockets", "master", "--steer", "off", "--metrics", off)
	m2.waitReady(2)
	if conns, unplaced := connectionsBySlot(scrape(t, off)); len(conns) != 0 || unplaced != -1 {
		t.Errorf("steering off: connections %v, unplaced %d; want no series", conns, unplaced)
	}
}

func connectionsEqualAccepts(t *testing.T, mode string) {
	const workers, n = 4, 1000
	metricsAddr := testkit.FreeAddr(t)
	m := startMaster(t, "--workers", "4", "--sockets", mode, "--steer", "on", "--metrics", metricsAddr)
	m.waitReady(workers)
	// The slots turn healthy at READY (in child socket mode, once the
	// master holds the child's listener); until then the kernel places
	// the connections (unplaced). Every slot has placed one once each is
	// healthy.
	eventually(t, 10*time.Second, "every slot placed a connection", func() bool {
		if _, err := getWhoami(m.addr); err != nil {
			t.Fatal(err)
		}
		conns, _ := connectionsBySlot(scrape(t, metricsAddr))
		for i := range workers {
			if conns[i] == 0 {
				return false
			}
		}
		return true
	})
	before := scrape(t, metricsAddr)
	conns0, unplaced0 := connectionsBySlot(before)
	accepts0 := acceptsBySlot(t, before)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	r := runLoad(ctx, m.addr, perRequest, 8, n)
	cancel()
	if r.failed() != 0 || r.ok != n {
		t.Fatalf("load: %v", r)
	}
	after := scrape(t, metricsAddr)
	conns, unplaced := connectionsBySlot(after)
	accepts := acceptsBySlot(t, after)
	var total uint64
	for i := range workers {
		placed, accepted := conns[i]-conns0[i], accepts[i]-accepts0[i]
		total += placed
		t.Logf("--sockets %s, slot %d: placed %d, accepted %d", mode, i, placed, accepted)
		if placed != accepted {
			t.Errorf("slot %d: the program placed %d connections, its child accepted %d", i, placed, accepted)
		}
	}
	if total != n || unplaced != unplaced0 {
		t.Errorf("%d connections placed and %d unplaced, want %d and 0", total, unplaced-unplaced0, n)
	}
}
