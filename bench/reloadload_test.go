package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// The two kinds of load client of BenchmarkReloadFailures.
const (
	keepAliveKind = iota // request after request on one connection
	newConnKind          // a new connection for every request
	kinds
)

var kindNames = [kinds]string{"keepalive", "newconn"}

// failuresResult is what one setup of BenchmarkReloadFailures saw; it
// crosses from the run in the network namespace to its parent as JSON.
type failuresResult struct {
	Reloads  int
	Elapsed  time.Duration
	OK       [kinds]int64
	Failures [kinds]map[string]int // by classify
	Samples  [kinds][]string
}

func (r failuresResult) failed(kind int) int {
	n := 0
	for _, c := range r.Failures[kind] {
		n += c
	}
	return n
}

// reloadSetup is one server setup of BenchmarkReloadFailures.
type reloadSetup struct {
	name    string
	migrate int // net.ipv4.tcp_migrate_req in its network namespace
	// start starts the server on a free loopback port and waits until it
	// serves.
	start func(b *testing.B) reloadable
}

// reloadable is a server of BenchmarkReloadFailures.
type reloadable struct {
	addr string
	// reload reloads the server and returns once the new generation
	// serves.
	reload func(context.Context) error
	// settle waits, after the last reload, until the old generations are
	// gone.
	settle func()
}

// BenchmarkReloadFailures: failed requests per 100 reloads under
// continuous load, for each setup in a network namespace of its own:
// four workers, 16 keep-alive clients and 16 clients that open a new
// connection per request, all sending GET / back to back, and 100
// reloads, each started once the load got 50 more answers since the last
// one and waited for until the new generation serves (`master reload`
// waits by itself; for nginx, until its four new workers exist). Then 50
// more answers, the old generations' exits, and the load stops.
//
// Reported per client kind: failed requests per 100 reloads (a refused or
// reset connection, an EOF before a full answer, a timeout, a status other
// than 200) and the requests answered. Every call runs 100 reloads once,
// whatever -benchtime says (-count repeats it); a setup stops reloading
// after 120 s and reports per 100 of the reloads it did (with the
// bounded waits around them a setup takes at most about 3.5 minutes).
//
// nginx (worker_processes 4, `nginx -s reload`, `listen` with and without
// reuseport, tcp_migrate_req=0) runs when `nginx` is on PATH and is
// skipped otherwise.
func BenchmarkReloadFailures(b *testing.B) {
	setups := []reloadSetup{
		{name: "sockets=child,migrate=0,steer=off", migrate: 0, start: preforkSetup("child", "--steer", "off")},
		{name: "sockets=child,migrate=0,steer=on", migrate: 0, start: preforkSetup("child", "--steer", "on")},
		{name: "sockets=child,migrate=1,steer=off", migrate: 1, start: preforkSetup("child", "--steer", "off")},
		{name: "sockets=master,migrate=0", migrate: 0, start: preforkSetup("master")},
		{name: "nginx,reuseport=off,migrate=0", migrate: 0, start: nginxSetup(false)},
		{name: "nginx,reuseport=on,migrate=0", migrate: 0, start: nginxSetup(true)},
	}
	for _, s := range setups {
		b.Run(s.name, func(b *testing.B) {
			if strings.HasPrefix(s.name, "nginx") {
				if _, err := exec.LookPath("nginx"); err != nil {
					b.Skip("nginx is not installed (apt-get install nginx-light adds it): ", err)
				}
			}
			if inNetns() {
				writeNetnsResult(b, reloadsUnderLoad(b, s, 100, 120*time.Second))
				for b.Loop() {
				}
				return
			}
			var r failuresResult
			runNetnsBench(b, s.migrate, 6*time.Minute, &r)
			for b.Loop() {
			}
			per100 := func(kind int) float64 { return float64(r.failed(kind)) * 100 / float64(max(r.Reloads, 1)) }
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(r.Reloads), "reloads")
			for k := range kinds {
				b.ReportMetric(per100(k), "failed-"+kindNames[k]+"/100reloads")
				b.ReportMetric(float64(r.OK[k]), "ok-"+kindNames[k])
			}
			b.Logf("%s: %d reloads in %v; keep-alive: %d ok, %d failed (%.1f per 100 reloads) %v %q; new connection per request: %d ok, %d failed (%.1f per 100 reloads) %v %q",
				s.name, r.Reloads, r.Elapsed.Round(time.Millisecond),
				r.OK[keepAliveKind], r.failed(keepAliveKind), per100(keepAliveKind), r.Failures[keepAliveKind], r.Samples[keepAliveKind],
				r.OK[newConnKind], r.failed(newConnKind), per100(newConnKind), r.Failures[newConnKind], r.Samples[newConnKind])
		})
	}
}

// reloadsUnderLoad starts s, puts the load on it and reloads it reloads
// times, or until limit has passed.
func reloadsUnderLoad(b *testing.B, s reloadSetup, reloads int, limit time.Duration) failuresResult {
	if got, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil || strings.TrimSpace(string(got)) != fmt.Sprint(s.migrate) {
		b.Fatalf("tcp_migrate_req is %q (%v) in this namespace, want %d", got, err, s.migrate)
	}
	srv := s.start(b)
	load := startReloadLoad(b, srv.addr, 16, 16)
	start := time.Now()
	deadline := start.Add(limit)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(30*time.Second))
	defer cancel()
	done := 0
	for done < reloads && time.Now().Before(deadline) {
		load.waitServed(b, 50)
		if err := srv.reload(ctx); err != nil {
			b.Fatalf("reload %d: %v", done+1, err)
		}
		done++
	}
	load.waitServed(b, 50)
	srv.settle()
	if done < reloads {
		b.Logf("stopped after %d reloads of %d: the %v limit passed", done, reloads, limit)
	}
	r := load.stop()
	r.Reloads, r.Elapsed = done, time.Since(start)
	return r
}

// preforkSetup starts `master run --workers 4 --sockets MODE` and reloads
// it with `master reload`. After the last reload it waits (up to 30 s)
// until every child of the old generations has exited.
func preforkSetup(sockets string, extra ...string) func(*testing.B) reloadable {
	return func(b *testing.B) reloadable {
		const n = 4
		m := startMaster(b, n, append([]string{"--sockets", sockets, "--drain-timeout", "10s"}, extra...)...)
		m.waitReady(time.Minute, n)
		reloads := 0
		return reloadable{
			addr: m.addr,
			reload: func(ctx context.Context) error {
				out, err := exec.CommandContext(ctx, filepath.Join(bin, "master"), "reload", "--control", m.control).CombinedOutput()
				if err != nil {
					return fmt.Errorf("master reload: %v: %s", err, out)
				}
				reloads++
				return nil
			},
			settle: func() {
				m.waitLog(30*time.Second, n*reloads, `"child exited" of every old generation`,
					func(l logLine) bool { return l.Msg == "child exited" })
				if bad := m.matching(func(l logLine) bool { return l.Msg == "child exited unexpectedly" }); len(bad) != 0 {
					b.Errorf("%d children exited unexpectedly, the first pid %d", len(bad), bad[0].PID)
				}
			},
		}
	}
}

// reloadLoad is the load of BenchmarkReloadFailures: a raw HTTP client,
// as in e2e (net/http's Transport retries a request whose connection
// broke, which would hide exactly the failures measured here).
type reloadLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	served atomic.Int64 // answers of both kinds

	mu  sync.Mutex
	res failuresResult
}

// startReloadLoad starts keep keep-alive clients and fresh clients with a
// new connection per request, all sending GET / to addr back to back
// until stop.
func startReloadLoad(b *testing.B, addr string, keep, fresh int) *reloadLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &reloadLoad{cancel: cancel}
	for k := range kinds {
		l.res.Failures[k] = map[string]int{}
	}
	for i := range keep + fresh {
		kind := keepAliveKind
		if i >= keep {
			kind = newConnKind
		}
		l.wg.Go(func() { l.client(ctx, addr, kind) })
	}
	b.Cleanup(func() { l.stop() })
	return l
}

// stop stops the load, waits for the requests in flight and returns the
// counts.
func (l *reloadLoad) stop() failuresResult {
	l.once.Do(func() { l.cancel(); l.wg.Wait() })
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// waitServed waits (up to 30 s) until n more requests were answered.
func (l *reloadLoad) waitServed(b *testing.B, n int64) {
	b.Helper()
	want := l.served.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for l.served.Load() < want {
		if time.Now().After(deadline) {
			r := l.stop()
			b.Fatalf("the load got fewer than %d answers in 30 s: %+v", n, r)
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *reloadLoad) client(ctx context.Context, addr string, kind int) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				l.fail(kind, err)
				time.Sleep(time.Millisecond) // no tight loop on a refusing port
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		closeAfter, err := testkit.RoundTrip(conn, br, kind == newConnKind)
		if err != nil {
			l.fail(kind, err)
		} else {
			l.served.Add(1)
			l.mu.Lock()
			l.res.OK[kind]++
			l.mu.Unlock()
		}
		if err != nil || closeAfter || kind == newConnKind {
			if err == nil {
				// Until the server's FIN: its side keeps the TIME_WAIT, so
				// that the client's ephemeral ports last.
				io.Copy(io.Discard, br)
			}
			conn.Close()
			conn = nil
		}
	}
}

func (l *reloadLoad) fail(kind int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Failures[kind][testkit.Classify(err)]++
	if len(l.res.Samples[kind]) < 3 {
		l.res.Samples[kind] = append(l.res.Samples[kind], err.Error())
	}
}
