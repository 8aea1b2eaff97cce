package bench

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkReloadLatency: one reload per iteration of a master with N = 4
// and 32 ready children and no traffic, started by SIGHUP. Reported:
//
//   - ms/took: the master's own "took_ms" of its "reload succeeded" line, from
//     the start of the reload to the old generation told to drain;
//   - ms/from-sighup: the "time" field of that line (the master's clock
//     when it logged it) minus this process's clock just before kill(2),
//     so the signal's delivery and the master's noticing it are in;
//   - ms/child-after: the median of the new generation's "after_ms" fields of
//     its "child ready" lines (each child's own spawn to READY=1), and
//     ms/last-child-after their maximum, the child start time a reload
//     cannot be faster than.
//
// Between iterations, with the timer stopped, it waits (up to 30 s) until
// every child of the old generation has exited.
func BenchmarkReloadLatency(b *testing.B) {
	for _, n := range []int{4, 32} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			m := startMaster(b, n)
			m.waitReady(2*time.Minute, n)
			time.Sleep(200 * time.Millisecond) // let the children's start-up work settle
			gen := 1
			var took, fromHUP, afters, lastAfters []float64
			for b.Loop() {
				hup := time.Now()
				if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
					b.Fatal(err)
				}
				next := gen + 1
				done := m.waitLog(time.Minute, 1, fmt.Sprintf(`"reload succeeded" of generation %d`, next),
					func(l logLine) bool { return l.Msg == "reload succeeded" && l.Generation == next })[0]

				b.StopTimer()
				if done.TookMS == nil {
					b.Fatalf(`"reload succeeded" line without took_ms`)
				}
				took = append(took, *done.TookMS)
				fromHUP = append(fromHUP, ms(done.Time.Sub(hup)))
				ready := m.matching(func(l logLine) bool { return l.Msg == "child ready" && l.Generation == next })
				if len(ready) != n {
					b.Fatalf("generation %d: %d children ready when the reload succeeded, want %d", next, len(ready), n)
				}
				var these []float64
				for _, l := range ready {
					these = append(these, ms(l.after(b)))
				}
				afters = append(afters, these...)
				lastAfters = append(lastAfters, slices.Max(these))
				m.waitLog(30*time.Second, n, fmt.Sprintf(`"child exited" of generation %d`, gen),
					func(l logLine) bool { return l.Msg == "child exited" && l.Generation == gen })
				if bad := m.matching(func(l logLine) bool { return l.Msg == "child exited unexpectedly" }); len(bad) != 0 {
					b.Fatalf("%d children exited unexpectedly, the first pid %d", len(bad), bad[0].PID)
				}
				gen = next
				time.Sleep(50 * time.Millisecond) // the exits' own work, out of the next reload
				b.StartTimer()
			}
			b.StopTimer()
			m.stop()
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(took), "ms/took")
			b.ReportMetric(median(fromHUP), "ms/from-sighup")
			b.ReportMetric(median(afters), "ms/child-after")
			b.ReportMetric(median(lastAfters), "ms/last-child-after")
			b.Logf("workers=%d, %d reloads by SIGHUP: median took %.2f ms (master), %.2f ms from the SIGHUP; children's own spawn-to-READY median %.2f ms, slowest of each generation median %.2f ms",
				n, len(took), median(took), median(fromHUP), median(afters), median(lastAfters))
		})
	}
}
