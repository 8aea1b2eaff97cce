package freeze

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/cgroup"
)

// BenchmarkFreezeThaw freezes and thaws a busy Go child (a goroutine
// spinning on each P), by SIGSTOP and by its cgroup, and reports the
// medians of the freeze (until seen stopped) and of the thaw, which is
// what a queue move adds to the child's pause besides its own two calls.
func BenchmarkFreezeThaw(b *testing.B) {
	b.Run("sigstop", func(b *testing.B) {
		pid := startBusy(b)
		benchFreezeThaw(b, Target{Pids: []int{pid}})
	})
	b.Run("cgroup", func(b *testing.B) {
		p, err := cgroup.Own()
		if err != nil {
			b.Skipf("needs child cgroups (run as root on cgroup v2): %v", err)
		}
		g := newGroup(b, p)
		startIn(b, g, busyCmd())
		waitFor(b, "the child to use CPU", func() bool {
			d, err := g.CPU()
			return err == nil && d > 10*time.Millisecond
		})
		benchFreezeThaw(b, Target{Cgroup: g})
	})
}

func benchFreezeThaw(b *testing.B, t Target) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var freezes, thaws []time.Duration
	for b.Loop() {
		start := time.Now()
		f, err := Freeze(ctx, []Target{t})
		frozen := time.Now()
		if err != nil || !f.Complete() {
			b.Fatalf("Freeze: %v, complete %v", err, f.Complete())
		}
		if err := f.Thaw(); err != nil {
			b.Fatal(err)
		}
		freezes = append(freezes, frozen.Sub(start))
		thaws = append(thaws, time.Since(frozen))
	}
	b.ReportMetric(median(freezes), "freeze-µs")
	b.ReportMetric(median(thaws), "thaw-µs")
}

// median is the median of ds in microseconds.
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Microsecond)
}
