package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// BenchmarkServers: the servers of docs/servers.md (gunicorn, uvicorn,
// node, nginx, caddy, lighttpd, h2o from Debian) under the master, each
// with the flags
// that page gives, in every socket mode it supports, 2 slots each, the
// fixtures of e2e/testdata/servers. Each run, in a network namespace of
// its own (net.ipv4.tcp_migrate_req as the name says; 0 in master socket
// mode, which needs no sysctl):
//
//   - start: every first-generation child's "after_ms" (spawn to ready)
//     and "by" (notify, listen) from its "child ready" line;
//   - kill -9 of slot 0's child: from the kill to its replacement's
//     "child ready" line (the master's clock; both are the machine's wall
//     clock), and which processes of the killed child's tree (read from
//     /proc before the kill) are still alive 1 s after it;
//   - one keep-alive connection for 3 s (`wrk -t1 -c1 --latency`): the
//     latency of a request;
//   - serversReloads reloads (`master reload`, waited for), one started
//     every serversReloadEvery, under `wrk -t2 -c8` keep-alive, which runs
//     from 2 s before the first reload until 1 s after the last old child
//     exited: wrk's socket errors and non-2xx answers per reload, and the
//     requests answered in each whole second (TRAPS 9: wrk never gives up
//     a stuck connection, which only shows as a second with few answers);
//   - stop: a GET /slow?ms=1000 (nginx, caddy, lighttpd and h2o proxy it
//     to a backend this benchmark starts) sent on a new connection, accepted, and then
//     0.2 s later SIGTERM to the master: its status, the master's exit
//     code, and whatever of any child's process group is left 1 s later.
//
// Every figure is reported with b.ReportMetric, and each run logs a row
// of docs/servers.md's table. A server that is not installed is skipped,
// saying so; so is everything without wrk. About 4 to 5 minutes on 2
// cores.
func BenchmarkServers(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not installed (apt-get install wrk adds it): ", err)
	}
	for _, sc := range serverBenches() {
		migrates := []int{0}
		if sc.sockets == "child" {
			migrates = []int{0, 1}
		}
		for _, migrate := range migrates {
			name := sc.name + ",sockets=" + sc.sockets
			if sc.sockets == "child" {
				name += ",migrate=" + strconv.Itoa(migrate)
			}
			b.Run(name, func(b *testing.B) {
				if out, err := exec.Command(sc.probe[0], sc.probe[1:]...).CombinedOutput(); err != nil {
					b.Skipf("%s is not installed (%s: %v: %s)", sc.name, strings.Join(sc.probe, " "), err, bytes.TrimSpace(out))
				}
				if inNetns() {
					writeNetnsResult(b, measureServer(b, sc, wrk, migrate))
					for b.Loop() {
					}
					return
				}
				var r serverResult
				runNetnsBench(b, migrate, 4*time.Minute, &r)
				for b.Loop() {
				}
				reportServer(b, sc, r)
			})
		}
	}
}

// The shape of every run of BenchmarkServers.
const (
	serverWorkers      = 2
	serversReloads     = 10
	serversReloadEvery = 1500 * time.Millisecond
)

// serverBench is one server in one socket mode.
type serverBench struct {
	name    string   // as in docs/servers.md's table
	sockets string   // child or master
	probe   []string // fails when the server is not installed
	readyBy string   // how its children should get ready: notify or listen
	forks   int      // worker processes each child forks
	proxies bool     // /slow is proxied to a backend of ours
	// command returns the master's flags beyond --workers, --listen,
	// --sockets and --drain-timeout, and the server's command line, for a
	// server on addr with dir a directory of its own and backend the
	// address that answers /slow ("" unless proxies).
	command func(b *testing.B, addr, dir, backend string) (flags, command []string)
}

// serverBenches are the cases of BenchmarkServers, with the command lines
// of e2e/servers_test.go (caddy's home comes from the config file's env:
// here, not from the master's environment).
func serverBenches() []serverBench {
	gunicorn := func(sockets string) serverBench {
		return serverBench{
			name: "gunicorn", sockets: sockets, readyBy: "notify", forks: 2,
			probe: []string{"/usr/bin/gunicorn", "--version"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				cmd := []string{"/usr/bin/gunicorn", "--chdir", serverFixtures(b), "--workers", "2", "--graceful-timeout", "8", "--preload"}
				if sockets == "child" {
					cmd = append(cmd, "--reuse-port", "--bind", "{listen}")
				}
				return nil, append(cmd, "app:app")
			},
		}
	}
	nginx := func(sockets string) serverBench {
		return serverBench{
			name: "nginx", sockets: sockets, readyBy: "listen", forks: 2, proxies: true,
			probe: []string{"/usr/sbin/nginx", "-v"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				listen := addr
				flags := []string{"--ready", "listen", "--stop-signal", "QUIT"}
				if sockets == "child" {
					listen += " reuseport"
				} else {
					cfg := filepath.Join(dir, "prefork.yaml")
					if err := os.WriteFile(cfg, []byte("env:\n  NGINX: \"3;\"\n"), 0o644); err != nil {
						b.Fatal(err)
					}
					flags = append(flags, "--config", cfg)
				}
				conf := fillTemplate(b, filepath.Join(serverFixtures(b), "nginx.conf"), dir, map[string]string{
					"LISTEN": listen, "DIR": dir, "BACKEND": backend,
				})
				return flags, []string{"/usr/sbin/nginx", "-e", "stderr", "-c", conf,
					"-g", "pid " + dir + "/nginx.{slot}.{generation}.pid;"}
			},
		}
	}
	return []serverBench{
		gunicorn("child"),
		gunicorn("master"),
		{
			name: "uvicorn", sockets: "master", readyBy: "listen",
			probe: []string{"/usr/bin/python3", "-c", "import uvicorn"}, // TRAPS 10
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				return []string{"--ready", "listen"}, []string{"/usr/bin/python3", "-m", "uvicorn",
					"--app-dir", serverFixtures(b), "--fd", "3", "--no-access-log", "asgi:app"}
			},
		},
		{
			name: "node", sockets: "master", readyBy: "listen",
			probe: []string{"/usr/bin/node", "--version"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				return []string{"--ready", "listen"}, []string{"/usr/bin/node", filepath.Join(serverFixtures(b), "app.js")}
			},
		},
		nginx("child"),
		nginx("master"),
		{
			name: "caddy", sockets: "child", readyBy: "notify", proxies: true,
			probe: []string{"/usr/bin/caddy", "version"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				host, port, _ := net.SplitHostPort(addr)
				conf := fillTemplate(b, filepath.Join(serverFixtures(b), "Caddyfile"), dir, map[string]string{
					"HOST": host, "PORT": port, "BACKEND": backend,
				})
				// Its home (autosave.json, storage) in a directory of its
				// own, by the config file's env:.
				cfg := filepath.Join(dir, "prefork.yaml")
				env := fmt.Sprintf("env:\n  HOME: %[1]q\n  XDG_CONFIG_HOME: %[1]q\n  XDG_DATA_HOME: %[1]q\n", dir)
				if err := os.WriteFile(cfg, []byte(env), 0o644); err != nil {
					b.Fatal(err)
				}
				return []string{"--config", cfg}, []string{"/usr/bin/caddy", "run", "--config", conf, "--adapter", "caddyfile"}
			},
		},
		{
			name: "lighttpd", sockets: "master", readyBy: "listen", proxies: true,
			probe: []string{"/usr/sbin/lighttpd", "-v"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				host, port, _ := net.SplitHostPort(addr)
				backendHost, backendPort, _ := net.SplitHostPort(backend)
				conf := fillTemplate(b, filepath.Join(serverFixtures(b), "lighttpd.conf"), dir, map[string]string{
					"HOST": host, "PORT": port, "WWW": filepath.Join(serverFixtures(b), "www"),
					"BACKENDHOST": backendHost, "BACKENDPORT": backendPort,
				})
				return []string{"--ready", "listen", "--stop-signal", "INT"}, []string{"/usr/sbin/lighttpd", "-D", "-f", conf}
			},
		},
		{
			name: "h2o", sockets: "master", readyBy: "listen", proxies: true,
			forks: 1, // its crash handler (perl), not a worker
			probe: []string{"/usr/bin/h2o", "--version"},
			command: func(b *testing.B, addr, dir, backend string) ([]string, []string) {
				host, port, _ := net.SplitHostPort(addr)
				conf := fillTemplate(b, filepath.Join(serverFixtures(b), "h2o.conf"), dir, map[string]string{
					"HOST": host, "PORT": port, "WWW": filepath.Join(serverFixtures(b), "www"), "BACKEND": backend,
				})
				// fd 3 the way Server::Starter hands it over.
				cfg := filepath.Join(dir, "prefork.yaml")
				if err := os.WriteFile(cfg, []byte("env:\n  SERVER_STARTER_PORT: \"{listen}=3\"\n"), 0o644); err != nil {
					b.Fatal(err)
				}
				return []string{"--config", cfg, "--ready", "listen"}, []string{"/usr/bin/h2o", "-c", conf}
			},
		},
	}
}

// serverResult is what one run of BenchmarkServers measured; it crosses
// from the run in the network namespace to its parent as JSON.
type serverResult struct {
	Migrate int
	ReadyBy []string  // by slot, the first generation's
	ReadyMS []float64 // by slot, the first generation's after_ms

	KillToReadyMS float64 // kill -9 of slot 0's child to its replacement's "child ready"
	Tree          []int   // the killed child's process tree before the kill
	Leftover      []int   // those of Tree alive 1 s after the kill

	LatencyAvgMS, LatencyP50MS float64 // wrk -t1 -c1, keep-alive

	Reloads  int
	Wrk      wrkCounts
	Windows  []int   // requests answered in each whole second of the load
	ReloadMS []int64 // how long each `master reload` took

	InFlightStatus int    // the /slow request's status (0: none)
	InFlightErr    string // why it got none
	ExitCode       int    // the master's, after SIGTERM
	LeftAtStop     []int  // live processes of any child's group 1 s after the master exited
}

// wrkCounts is what wrk's report says.
type wrkCounts struct {
	Requests                      int
	Seconds                       float64
	Connect, Read, Write, Timeout int // "Socket errors: ..."
	Non2xx                        int // "Non-2xx or 3xx responses: ..."
	LatencyAvgMS, LatencyP50MS    float64
}

// failed is every request wrk counted as failed.
func (w wrkCounts) failed() int { return w.Connect + w.Read + w.Write + w.Timeout + w.Non2xx }

// measureServer runs every step of one case in this network namespace.
func measureServer(b *testing.B, sc serverBench, wrk string, migrate int) serverResult {
	if got, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(migrate) {
		b.Fatalf("tcp_migrate_req is %q (%v) in this namespace, want %d", got, err, migrate)
	}
	dir := b.TempDir()
	addr := testkit.FreeAddr(b)
	backend := ""
	if sc.proxies {
		backend = slowBackend(b)
	}
	flags, command := sc.command(b, addr, dir, backend)
	args := append([]string{"--sockets", sc.sockets, "--drain-timeout", "10s"}, flags...)
	m := startServerMaster(b, addr, append(append(args, "--"), command...)...)
	r := serverResult{Migrate: migrate}
	serverStart(b, m, &r)
	serverKill(b, m, sc, &r)
	serverLatency(b, m, wrk, &r)
	serverReloads(b, m, wrk, &r)
	serverStop(b, m, &r)
	return r
}

// serverStart waits for the first generation's children to be ready and
// for the service to answer.
func serverStart(b *testing.B, m *master, r *serverResult) {
	lines := m.waitReady(time.Minute, serverWorkers)
	r.ReadyBy = make([]string, serverWorkers)
	r.ReadyMS = make([]float64, serverWorkers)
	by := readyByOf(m)
	for _, l := range lines[:serverWorkers] {
		r.ReadyBy[l.Slot] = by[l.PID]
		r.ReadyMS[l.Slot] = ms(l.after(b))
	}
	serverProbe(b, m.addr, 10)
}

// serverKill kills slot 0's child with SIGKILL and measures until its
// replacement is ready, then which processes of its tree are left 1 s
// after the kill.
func serverKill(b *testing.B, m *master, sc serverBench, r *serverResult) {
	ready := func(l logLine) bool { return l.Msg == "child ready" }
	victim := readyBySlot(m.matching(ready))[0]
	// gunicorn's workers boot after its READY=1: wait for the whole tree.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r.Tree = testkit.Descendants(victim)
		if len(r.Tree) >= 1+sc.forks {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("child %d has the tree %v after 10 s, want %d workers", victim, r.Tree, sc.forks)
		}
	}
	killed := time.Now()
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	again := m.waitLog(30*time.Second, 1, "a replacement ready in slot 0", func(l logLine) bool {
		return ready(l) && l.Slot == 0 && l.PID != victim
	})[0]
	r.KillToReadyMS = ms(again.Time.Sub(killed))
	time.Sleep(time.Until(killed.Add(time.Second)))
	r.Leftover = testkit.AliveOf(r.Tree)
	serverProbe(b, m.addr, 10)
}

// serverLatency measures one keep-alive connection for 3 s.
func serverLatency(b *testing.B, m *master, wrk string, r *serverResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, "-t1", "-c1", "-d3s", "--latency", "http://"+m.addr+"/").CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v: %s", err, out)
	}
	w := parseWrkReport(out)
	if w.failed() != 0 {
		b.Logf("one connection, no reload: %d failed requests:\n%s", w.failed(), out)
	}
	r.LatencyAvgMS, r.LatencyP50MS = w.LatencyAvgMS, w.LatencyP50MS
}

// wrkWindows is a wrk script that prints, per thread, the answers of each
// second of the wall clock once the next second has an answer: a second
// with none (a stuck thread) has no line.
const wrkWindows = `local n = 0
function setup(thread) n = n + 1; thread:set("id", n) end
local count, sec = 0, nil
function response(status, headers, body)
  local now = os.time()
  if sec == nil then sec = now end
  if now ~= sec then
    io.write(string.format("window %d %d %d\n", id, sec, count))
    count, sec = 0, now
  end
  count = count + 1
end
`

// serverReloads reloads serversReloads times under wrk -t2 -c8.
func serverReloads(b *testing.B, m *master, wrk string, r *serverResult) {
	script := filepath.Join(b.TempDir(), "windows.lua")
	if err := os.WriteFile(script, []byte(wrkWindows), 0o644); err != nil {
		b.Fatal(err)
	}
	// -d is only the bound: wrk gets SIGINT (it then reports) once the
	// series is done.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := exec.CommandContext(ctx, wrk, "-t2", "-c8", "-d120s", "--timeout", "5s", "-s", script, "http://"+m.addr+"/")
	var out bytes.Buffer
	load.Stdout, load.Stderr = &out, &out
	load.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := load.Start(); err != nil {
		b.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = load.Wait(); close(exited) }()
	b.Cleanup(func() {
		select {
		case <-exited:
		default:
			load.Process.Kill()
			<-exited
		}
	})
	time.Sleep(2 * time.Second)
	started := time.Now()
	gen := 1
	for i := range serversReloads {
		if time.Since(started) > 80*time.Second {
			b.Logf("stopped after %d reloads: 80 s passed", i)
			break
		}
		t0 := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		got, err := exec.CommandContext(rctx, filepath.Join(bin, "master"), "reload", "--control", m.control).CombinedOutput()
		rcancel()
		gen++
		if err != nil || !strings.Contains(string(got), fmt.Sprintf("generation %d serves", gen)) {
			b.Fatalf("reload to generation %d: %v: %s", gen, err, got)
		}
		r.ReloadMS = append(r.ReloadMS, time.Since(t0).Milliseconds())
		r.Reloads++
		time.Sleep(time.Until(t0.Add(serversReloadEvery)))
	}
	serverOldGone(b, m, gen)
	time.Sleep(time.Second)
	load.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
		if waitErr != nil {
			b.Fatalf("wrk: %v: %s", waitErr, out.String())
		}
	case <-time.After(10 * time.Second):
		b.Fatalf("wrk still running 10 s after SIGINT: %s", out.String())
	}
	r.Wrk = parseWrkReport(out.Bytes())
	r.Windows = wrkSeconds(out.Bytes())
	if r.Wrk.Requests == 0 {
		b.Fatalf("no requests in wrk's report:\n%s", out.String())
	}
}

// serverOldGone waits (up to 30 s) until every child of the generations
// before gen has exited.
func serverOldGone(b *testing.B, m *master, gen int) {
	started := len(m.matching(func(l logLine) bool { return l.Msg == "child started" && l.Generation < gen }))
	m.waitLog(30*time.Second, started, fmt.Sprintf("the exits of the %d children of generations before %d", started, gen),
		func(l logLine) bool { return strings.HasPrefix(l.Msg, "child exited") && l.Generation < gen })
}

// serverStop stops the master with a GET /slow?ms=1000 in flight.
func serverStop(b *testing.B, m *master, r *serverResult) {
	c, err := net.DialTimeout("tcp", m.addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /slow?ms=1000 HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n"); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); acceptQueued(b, m.addr) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the /slow request is not accepted after 5 s")
		}
	}
	// Accepted is not yet read: let it reach the application (or nginx's
	// and caddy's backend).
	time.Sleep(200 * time.Millisecond)
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.InFlightStatus = resp.StatusCode
	}
	if err != nil {
		r.InFlightErr = testkit.Classify(err) + ": " + err.Error()
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		b.Fatal("master still running 30 s after SIGTERM")
	}
	r.ExitCode = m.cmd.ProcessState.ExitCode()
	time.Sleep(time.Second)
	r.LeftAtStop = serverGroupMembers(m)
}

// reportServer reports one run's figures and logs its row of
// docs/servers.md's table.
func reportServer(b *testing.B, sc serverBench, r serverResult) {
	failed := float64(r.Wrk.failed()) / float64(max(r.Reloads, 1))
	slowest := slices.Max(r.ReadyMS)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(slowest, "ready-ms")
	b.ReportMetric(r.KillToReadyMS, "kill-to-ready-ms")
	b.ReportMetric(float64(len(r.Leftover)), "left-after-kill")
	b.ReportMetric(r.LatencyAvgMS, "latency-ms")
	b.ReportMetric(failed, "failed/reload")
	b.ReportMetric(float64(r.Wrk.Requests)/max(r.Wrk.Seconds, 1e-9), "req/s")
	inFlight := 0.0
	if r.InFlightStatus == 200 {
		inFlight = 1
	}
	b.ReportMetric(inFlight, "inflight-200")

	socket := sc.sockets
	if sc.sockets == "child" {
		socket += fmt.Sprintf(" (migrate %d)", r.Migrate)
	}
	left := "none"
	if len(r.Leftover) > 0 {
		left = fmt.Sprintf("%d of %d", len(r.Leftover), len(r.Tree))
	}
	stop := strconv.Itoa(r.InFlightStatus)
	if r.InFlightStatus == 0 {
		stop = r.InFlightErr
	}
	b.Logf("| %s | %s | %s | %.0f ms | %.0f ms | %s (tree of %d) | %.1f | %s |",
		sc.name, socket, strings.Join(slices.Compact(slices.Clone(r.ReadyBy)), ","), slowest, r.KillToReadyMS,
		left, len(r.Tree), failed, stop)
	b.Logf("ready after %v ms by %v; 1 keep-alive connection: latency avg %.2f ms, p50 %.2f ms; "+
		"%d reloads (each took %v ms) under wrk -t2 -c8: %d requests in %.1f s, socket errors connect %d, read %d, write %d, timeout %d, non-2xx %d; "+
		"answers per second %v; at stop: status %d %s, master exit %d, %d processes left",
		r.ReadyMS, r.ReadyBy, r.LatencyAvgMS, r.LatencyP50MS,
		r.Reloads, r.ReloadMS, r.Wrk.Requests, r.Wrk.Seconds, r.Wrk.Connect, r.Wrk.Read, r.Wrk.Write, r.Wrk.Timeout, r.Wrk.Non2xx,
		r.Windows, r.InFlightStatus, r.InFlightErr, r.ExitCode, len(r.LeftAtStop))
	if len(r.Windows) == 0 {
		b.Logf("wrk printed too few whole seconds to judge whether a connection was stuck")
	} else if lo, mid := slices.Min(r.Windows), median(intsToFloats(r.Windows)); float64(lo) < mid/10 {
		b.Logf("a second with %d answers against a median of %.0f: a connection may have been stuck (TRAPS 9)", lo, mid)
	}
	if slices.ContainsFunc(r.ReadyBy, func(by string) bool { return by != sc.readyBy }) {
		b.Errorf("ready by %v, want %s", r.ReadyBy, sc.readyBy)
	}
}

// The lines of wrk's report that parseWrkReport reads.
var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m|h)`)
	wrkErrors   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkLatency  = regexp.MustCompile(`(?m)^\s+Latency\s+([\d.]+)(us|ms|s)`)
	wrkP50      = regexp.MustCompile(`(?m)^\s+50%\s+([\d.]+)(us|ms|s)`)
)

// parseWrkReport reads wrk's report.
func parseWrkReport(out []byte) wrkCounts {
	var w wrkCounts
	atoi := func(s []byte) int { n, _ := strconv.Atoi(string(s)); return n }
	if m := wrkRequests.FindSubmatch(out); m != nil {
		w.Requests = atoi(m[1])
		w.Seconds = wrkDuration(m[2], m[3]) / 1000
	}
	if m := wrkErrors.FindSubmatch(out); m != nil {
		w.Connect, w.Read, w.Write, w.Timeout = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		w.Non2xx = atoi(m[1])
	}
	if m := wrkLatency.FindSubmatch(out); m != nil {
		w.LatencyAvgMS = wrkDuration(m[1], m[2])
	}
	if m := wrkP50.FindSubmatch(out); m != nil {
		w.LatencyP50MS = wrkDuration(m[1], m[2])
	}
	return w
}

// wrkDuration converts one of wrk's durations to milliseconds.
func wrkDuration(num, unit []byte) float64 {
	v, _ := strconv.ParseFloat(string(num), 64)
	return v * map[string]float64{"us": 1e-3, "ms": 1, "s": 1e3, "m": 60e3, "h": 3600e3}[string(unit)]
}

// wrkSeconds sums the "window THREAD SECOND COUNT" lines of wrkWindows
// over the threads, for every whole second between the first and the
// last one seen (those two are partial and left out); a second no thread
// printed counts 0.
func wrkSeconds(out []byte) []int {
	bySec := map[int64]int{}
	for line := range strings.Lines(string(out)) {
		var thread, n int
		var sec int64
		if _, err := fmt.Sscanf(line, "window %d %d %d", &thread, &sec, &n); err == nil {
			bySec[sec] += n
		}
	}
	if len(bySec) < 3 {
		return nil
	}
	secs := slices.Sorted(maps.Keys(bySec))
	var windows []int
	for s := secs[0] + 1; s < secs[len(secs)-1]; s++ {
		windows = append(windows, bySec[s])
	}
	return windows
}

func intsToFloats(xs []int) []float64 {
	fs := make([]float64, len(xs))
	for i, x := range xs {
		fs[i] = float64(x)
	}
	return fs
}

// serverFixtures is e2e's directory of the servers' fixtures.
func serverFixtures(b *testing.B) string {
	dir, err := filepath.Abs(filepath.Join("..", "e2e", "testdata", "servers"))
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// fillTemplate writes the template src with every @KEY@ of vars replaced
// to a file in dir, and returns its path.
func fillTemplate(b *testing.B, src, dir string, vars map[string]string) string {
	text, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		pairs = append(pairs, "@"+k+"@", vars[k])
	}
	out := strings.NewReplacer(pairs...).Replace(string(text))
	if left := regexp.MustCompile(`@[A-Z]+@`).FindString(out); left != "" {
		b.Fatalf("%s: placeholder %s left unfilled", src, left)
	}
	path := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// slowBackend serves GET /slow?ms=N after N ms, for the servers that
// proxy /slow, and returns its address.
func slowBackend(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(n) * time.Millisecond)
		fmt.Fprintln(w, "slow")
	}))
	b.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// serverProbe makes n requests for / on new connections; each must get a
// 200.
func serverProbe(b *testing.B, addr string, n int) {
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatalf("GET /: %v", err)
		}
		_, err = testkit.RoundTrip(c, bufio.NewReader(c), true)
		c.Close()
		if err != nil {
			b.Fatalf("GET /: %v", err)
		}
	}
}

// readyByOf returns the "by" of every "child ready" line so far, by pid
// (the harness's logLine does not decode it).
func readyByOf(m *master) map[int]string {
	m.mu.Lock()
	raw := m.raw.String()
	m.mu.Unlock()
	by := map[int]string{}
	for line := range strings.Lines(raw) {
		var l struct {
			Msg string `json:"msg"`
			PID int    `json:"pid"`
			By  string `json:"by"`
		}
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &l) == nil && l.Msg == "child ready" {
			by[l.PID] = l.By
		}
	}
	return by
}

// serverGroupMembers returns the live processes of the process groups
// of the children m started: the master starts each child as the leader
// of a group of its own, and a forking server's workers stay in it, even
// once orphaned (nginx's outlive their master). A logged pid may have been
// reused since (pid_max is 32768 here, and other masters run beside this
// one): a process in the cgroup of another master's child is never
// counted, whatever its group.
func serverGroupMembers(m *master) []int {
	m.mu.Lock()
	leaders := slices.Clone(m.pids)
	m.mu.Unlock()
	var members []int
	for _, pid := range testkit.GroupMembers(leaders) {
		if ours, anyChild := testkit.InChildCgroupOf(pid, m.cmd.Process.Pid); anyChild && !ours {
			continue
		}
		members = append(members, pid)
	}
	return members
}

// startServerMaster is startMasterOn with --workers serverWorkers: when
// the benchmark ends the master is killed if still running, then whatever
// is left of its children's process groups (the harness's own cleanup
// kills bin/child processes only).
func startServerMaster(b *testing.B, addr string, args ...string) *master {
	b.Helper()
	m := startMasterOn(b, addr, serverWorkers, args...)
	m.leftovers = serverGroupMembers
	return m
}
