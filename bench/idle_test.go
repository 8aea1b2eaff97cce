package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkMasterIdle: what the master itself costs with 64 ready children
// and no traffic: its resident memory (VmRSS) and its CPU time (utime +
// stime of /proc/PID/stat, all its threads, not its children), scaled to
// CPU seconds per minute.
//
// Each iteration is a 2 s slice of one window that starts 2 s after the
// 64th child got ready, so `-benchtime 5x` measures a 10 s window. utime
// and stime count in clock ticks of 10 ms, which over 10 s is a coarse
// 0.06 s/min per tick; the sum of the threads' schedstat run times
// (nanoseconds) and the master's context switches per second are
// reported beside it. The master-mode cases show what steering's health
// checks cost (they need root, where the program loads).
func BenchmarkMasterIdle(b *testing.B) {
	for _, workers := range []int{64, 256} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { benchIdle(b, workers) })
	}
	for _, steer := range []string{"on", "off"} {
		b.Run("workers=64/sockets=master/steer="+steer, func(b *testing.B) {
			if steer == "on" && os.Geteuid() != 0 {
				b.Skip("the steering program loads only as root here")
			}
			benchIdle(b, 64, "--sockets", "master", "--steer", steer)
		})
	}
}

func benchIdle(b *testing.B, workers int, args ...string) {
	const (
		slice  = 2 * time.Second
		settle = 2 * time.Second
	)
	m := startMaster(b, workers, args...)
	m.waitReady(2*time.Minute, workers)
	time.Sleep(settle)
	pid := m.cmd.Process.Pid

	ticks0, sched0, cs0 := cpuTicks(b, pid), schedNS(pid), switches(b, pid)
	start := time.Now()
	var rss int
	for b.Loop() {
		time.Sleep(slice)
		rss = max(rss, rssKiB(b, pid))
	}
	window := time.Since(start)
	ticks, sched, cs := cpuTicks(b, pid)-ticks0, schedNS(pid)-sched0, switches(b, pid)-cs0

	if exits := m.matching(func(l logLine) bool { return strings.HasPrefix(l.Msg, "child exited") }); len(exits) != 0 {
		b.Errorf("%d children exited during the idle window", len(exits))
	}
	m.stop()

	perMin := time.Minute.Seconds() / window.Seconds()
	cpu := float64(ticks) / clockTicks * perMin
	schedCPU := float64(sched) / 1e9 * perMin
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(rss), "KiB-rss")
	b.ReportMetric(cpu, "cpu-s/min")
	b.ReportMetric(schedCPU, "sched-cpu-s/min")
	b.ReportMetric(float64(cs)/window.Seconds(), "ctxsw/s")
	b.Logf("idle master with %d ready children %q over %v: VmRSS %d KiB, CPU %.3f s/min (%d ticks; schedstat %.4f s/min, %v in all), %.0f context switches/s",
		workers, args, window.Round(time.Millisecond), rss, cpu, ticks, schedCPU, time.Duration(sched), float64(cs)/window.Seconds())
}

// switches returns the context switches, voluntary and not, of all of
// pid's threads (/proc/PID/task/*/status).
func switches(tb testing.TB, pid int) int64 {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks returns utime+stime of pid (all its threads), in clock ticks.
func cpuTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name may hold spaces and parentheses; fields count from
	// after its closing parenthesis: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return utime + stime
}

// schedNS returns the time pid's live threads have run, in nanoseconds,
// from /proc/PID/task/*/schedstat; 0 if the kernel has no schedstat.
func schedNS(pid int) int64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			total += n
		}
	}
	return total
}

// rssKiB returns VmRSS of pid in KiB.
func rssKiB(tb testing.TB, pid int) int {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.Atoi(f[0]); err == nil {
					return n
				}
			}
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
