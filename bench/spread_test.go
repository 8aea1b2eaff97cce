package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkSpread: 10,000 new connections, one GET /whoami each, from 4
// concurrent clients, over 4 children; the metric is the busiest slot's
// count over the idlest's (1 is a perfect spread; for a uniform hash,
// about 1.05 to 1.1 is expected at this count).
func BenchmarkSpread(b *testing.B) {
	const (
		workers = 4
		conns   = 10_000
		clients = 4
	)
	m := startMaster(b, workers)
	m.waitReady(time.Minute, workers)
	var ratios []float64
	var last [workers]int
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var (
			mu       sync.Mutex
			perSlot  [workers]int
			failed   int
			firstErr error
			wg       sync.WaitGroup
		)
		for range clients {
			wg.Go(func() {
				var mine [workers]int
				bad := 0
				var errMine error
				for range conns / clients {
					if ctx.Err() != nil {
						break
					}
					slot, err := whoamiSlot(m.addr)
					if err == nil && (slot < 0 || slot >= workers) {
						err = fmt.Errorf("whoami answered slot %d of %d", slot, workers)
					}
					if err != nil {
						bad++
						if errMine == nil {
							errMine = err
						}
						continue
					}
					mine[slot]++
				}
				mu.Lock()
				defer mu.Unlock()
				for i := range mine {
					perSlot[i] += mine[i]
				}
				failed += bad
				if firstErr == nil {
					firstErr = errMine
				}
			})
		}
		wg.Wait()
		timedOut := ctx.Err()
		cancel()
		if failed != 0 || timedOut != nil {
			b.Fatalf("%d of %d connections failed (first: %v); time out: %v", failed, conns, firstErr, timedOut)
		}
		lo, hi := slices.Min(perSlot[:]), slices.Max(perSlot[:])
		if lo == 0 {
			b.Fatalf("a slot got none of %d connections: %v", conns, perSlot)
		}
		ratios = append(ratios, float64(hi)/float64(lo))
		last = perSlot
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(ratios), "max/min")
	b.Logf("%d connections over %d children: max/min per slot median %.3f over %d runs (last run per slot: %v)",
		conns, workers, median(ratios), len(ratios), last)
}
