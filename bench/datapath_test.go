package bench

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// BenchmarkDataPath: requests per second of a keep-alive load (32
// connections, GET /, 2 s) through 4 children of the master, and through 4
// bin/child processes started by hand on another port (same environment,
// no NOTIFY_SOCKET; they bind with SO_REUSEPORT themselves). The master
// never touches client traffic, so the ratio supervised/by-hand should be
// 1 within noise (goal: at least 0.99).
//
// Both setups stay up for the whole run. Each iteration loads them in
// turn in slices of 200 ms, A B B A A B B A..., so that the drift of a
// shared, noisy machine hits both alike; each gets 2 s in all, on 32
// fresh connections per slice (which also averages over how the kernel
// happens to hash 32 connections onto 4 children). The idle setup costs
// next to nothing while the other one is loaded.
//
// Reported: the median req/s of each setup over the iterations, and as
// "supervised/by-hand" the median of the iterations' own ratios, each
// taken from two loads interleaved in the same 4 s, which cancels drift
// between iterations better than the ratio of the two medians (logged
// too).
func BenchmarkDataPath(b *testing.B) {
	const (
		workers = 4
		clients = 32
		period  = 2 * time.Second // per setup and iteration
		turns   = 10              // alternations per iteration
		maxReqs = 20_000_000      // a bound, far above what 2 s can serve
	)
	m := startMaster(b, workers)
	m.waitReady(time.Minute, workers)
	byHand := testkit.FreeAddr(b)
	var hand []*exec.Cmd
	for slot := range workers {
		hand = append(hand, startChild(b, byHand, "PREFORK_SLOT="+strconv.Itoa(slot),
			"PREFORK_GENERATION=1", "PREFORK_WORKERS="+strconv.Itoa(workers), "PREFORK_DRAIN_TIMEOUT=30s"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for listeners(b, byHand) < workers || listeners(b, m.addr) < workers {
		if time.Now().After(deadline) {
			b.Fatalf("after 30 s: %d listeners on %s (by hand), %d on %s (supervised), want %d each",
				listeners(b, byHand), byHand, listeners(b, m.addr), m.addr, workers)
		}
		time.Sleep(10 * time.Millisecond)
	}

	setups := []struct {
		addr string
		rps  []float64
	}{{addr: m.addr}, {addr: byHand}} // supervised, by hand
	load := func(addr string, d time.Duration) loadResult {
		r := keepAliveLoad(addr, clients, d, maxReqs)
		if r.failed != 0 || r.ok == 0 {
			b.Fatalf("load on %s: %d ok, %d failed (first: %v)", addr, r.ok, r.failed, r.firstErr)
		}
		return r
	}
	// Warm both up: first requests fault in pages and grow stacks.
	for _, s := range setups {
		load(s.addr, 300*time.Millisecond)
	}

	var pairs []float64
	for i := 0; b.Loop(); i++ {
		var ok [2]int64
		var took [2]time.Duration
		for r := range turns {
			for k := range 2 {
				j := (i + r + k) % 2
				res := load(setups[j].addr, period/turns)
				ok[j] += res.ok
				took[j] += res.elapsed
			}
		}
		var got [2]float64
		for j := range 2 {
			got[j] = float64(ok[j]) / took[j].Seconds()
			setups[j].rps = append(setups[j].rps, got[j])
		}
		pairs = append(pairs, got[0]/got[1])
	}

	m.stop()
	for _, cmd := range hand {
		stopChild(b, cmd)
	}
	sup, man := median(setups[0].rps), median(setups[1].rps)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(sup, "req/s-supervised")
	b.ReportMetric(man, "req/s-by-hand")
	b.ReportMetric(median(pairs), "supervised/by-hand")
	b.Logf("keep-alive, %d connections, %v per setup and run, %d runs: supervised %.0f req/s, by hand %.0f req/s; supervised/by-hand median of per-run ratios %.3f (ratio of medians %.3f)",
		clients, period, len(pairs), sup, man, median(pairs), sup/man)
	if testing.Verbose() {
		b.Logf("per run, supervised %s; by hand %s", fmtRates(setups[0].rps), fmtRates(setups[1].rps))
	}
}

func fmtRates(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
