package bench

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
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
	addr, err := testkit.NotifySocket(m.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
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
