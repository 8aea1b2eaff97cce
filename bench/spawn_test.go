package bench

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// BenchmarkSpawn: wall time from the fork/exec of `master run` to its Nth
// "child ready" line, for N = 4 and 64 ("ms/spawn"). Compare with
// BenchmarkChildStart, the start time of one child alone. Also reported:
// when the first child was forked ("ms/first-fork", the master's own
// start-up) and the median of the children's own "after_ms" (spawn to
// READY=1 of each, which grows as N children share the CPUs).
//
// The end is the "time" field of the Nth "child ready" line, the master's
// own clock when it logged the child ready, not when this process read
// the line: reading adds the pipe, a JSON decode and a wakeup of this
// process, which competes for the CPUs with N starting children. Both
// clocks are the machine's wall clock, read on the same host.
func BenchmarkSpawn(b *testing.B) {
	for _, n := range []int{4, 64} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			var spawn, afters, first []float64
			for b.Loop() {
				m := startMaster(b, n)
				ready := m.waitReady(2*time.Minute, n)[:n]
				started := m.matching(func(l logLine) bool { return l.Msg == "child started" })
				first = append(first, ms(started[0].Time.Sub(m.start)))
				last := ready[0].Time
				for _, l := range ready {
					if l.Time.After(last) {
						last = l.Time
					}
					afters = append(afters, ms(l.after(b)))
				}
				spawn = append(spawn, ms(last.Sub(m.start)))
				b.StopTimer()
				m.stop()
				b.StartTimer()
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(spawn), "ms/spawn")
			b.ReportMetric(median(afters), "ms/child-after")
			b.ReportMetric(median(first), "ms/first-fork")
			b.Logf("workers=%d: master start to the %dth child ready: median %.1f ms over %d runs (first child forked after %.1f ms; each child's own spawn-to-READY median %.1f ms)",
				n, n, median(spawn), len(spawn), median(first), median(afters))
		})
	}
}

// notifyN numbers the notify sockets of this process.
var notifyN atomic.Int64

// BenchmarkChildStart: the start time of one reference child without a
// master: from its fork/exec to the arrival of its READY=1 datagram on a
// notify socket this benchmark owns (the master's "after_ms" measures the
// same span). Then SIGTERM, and wait until it is gone.
func BenchmarkChildStart(b *testing.B) {
	var starts []float64
	buf := make([]byte, 4096)
	for b.Loop() {
		b.StopTimer()
		name := fmt.Sprintf("@prefork-bench-%d-%d", os.Getpid(), notifyN.Add(1))
		sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			b.Fatal(err)
		}
		addr := testkit.FreeAddr(b)
		b.StartTimer()

		start := time.Now()
		cmd := startChild(b, addr, "NOTIFY_SOCKET="+name,
			"PREFORK_SLOT=0", "PREFORK_GENERATION=1", "PREFORK_WORKERS=1", "PREFORK_DRAIN_TIMEOUT=30s")
		sock.SetReadDeadline(start.Add(30 * time.Second))
		for {
			n, _, err := sock.ReadFromUnix(buf)
			if err != nil {
				b.Fatalf("no READY=1 from child %d: %v", cmd.Process.Pid, err)
			}
			if strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
				break
			}
		}
		starts = append(starts, ms(time.Since(start)))

		b.StopTimer()
		stopChild(b, cmd)
		sock.Close()
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(starts), "ms/start")
	b.Logf("one child alone, fork/exec to READY=1: median %.1f ms over %d runs", median(starts), len(starts))
}
