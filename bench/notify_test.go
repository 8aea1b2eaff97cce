package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"testing"
	"time"
)

// BenchmarkNotifyFlood: the master's CPU while a process that is not a
// child floods its sd_notify socket as fast as it can for 3 s (any local
// user can: the socket's name is in /proc/net/unix). Reported: the
// master's CPU in ms per second of flood (1000 would be a whole core) and
// the datagrams the flood got in per second. Before the rate limit, the
// master kept up with the flood on its event loop: about 1,100 ms/s.
func BenchmarkNotifyFlood(b *testing.B) {
	const flood = 3 * time.Second
	m := startMaster(b, 2)
	m.waitReady(30*time.Second, 2)
	addr := notifySocket(b, m.cmd.Process.Pid)
	for b.Loop() {
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), flood)
		before := cpuTicks(b, m.cmd.Process.Pid)
		start := time.Now()
		sent := 0
		msg := []byte("READY=1\nSTATUS=flood")
		for ctx.Err() == nil {
			conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := conn.Write(msg); err == nil {
				sent++
			}
		}
		took := time.Since(start)
		cpu := float64(cpuTicks(b, m.cmd.Process.Pid)-before) * 1000 / clockTicks
		cancel()
		conn.Close()
		b.ReportMetric(cpu/took.Seconds(), "master-cpu-ms/s")
		b.ReportMetric(float64(sent)/took.Seconds(), "datagrams/s")
	}
}

// notifySocket finds the master's sd_notify socket in /proc/net/unix.
func notifySocket(tb testing.TB, pid int) string {
	tb.Helper()
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		tb.Fatal(err)
	}
	name := regexp.MustCompile(fmt.Sprintf(`@prefork/%d/[0-9a-f]+`, pid)).Find(data)
	if name == nil {
		tb.Fatalf("no notify socket of pid %d in /proc/net/unix", pid)
	}
	return string(name)
}
