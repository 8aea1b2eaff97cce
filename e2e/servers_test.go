package e2e

import (
	"context"
	"fmt"
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

// The servers of docs/servers.md, each run under the master with flags
// only, as that page tells an operator to, in every socket mode it
// supports: gunicorn, uvicorn, node, nginx, caddy, lighttpd and h2o from
// Debian. Each
// case starts 2 children and waits for both to be ready, kills one with
// SIGKILL (its slot serves again, and nothing of its process tree is
// left, workers included), reloads twice under light keep-alive load (the
// second a rolling reload)
// (the failures of each reload are logged; our own fixture must lose
// none, a foreign server only has to serve again afterwards), and stops
// the master with a request in flight, which must get its answer.
//
// A server that is not installed skips its test, saying so; under CI
// (CI=true) it fails it instead: .ci/run installs every one of them.
//
// Each case logs a "figures:" line, the numbers of docs/servers.md's
// table.

// serverCase is one server in one socket mode.
type serverCase struct {
	sockets string   // child or master
	flags   []string // master flags beyond --workers, --sockets and --drain-timeout
	env     []string // the master's extra environment, which the children inherit
	command []string // the server's command line, with placeholders
	readyBy string   // how a child gets ready: notify or listen
	forks   int      // worker processes each child forks of its own
	ours    bool     // the program drains as the child contract says: a reload loses nothing
	slow    string   // a path answered after about 1 s
}

// serverWorkers is the number of slots of every case.
const serverWorkers = 2

// servers is the directory of the fixtures.
func servers(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "servers"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// needServer runs probe (the server's version, say) and skips the test
// when it fails, or fails the test under CI, where a missing server means
// that .ci/run did not install it.
func needServer(t *testing.T, what string, probe ...string) {
	t.Helper()
	out, err := exec.Command(probe[0], probe[1:]...).CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s is not installed (%s: %v: %s)", what, strings.Join(probe, " "), err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; under CI .ci/run must install it", msg)
	}
	t.Skip(msg)
}

// unfilled matches a template placeholder of fill.
var unfilled = regexp.MustCompile(`@[A-Z]+@`)

// fill writes the template src with every @KEY@ of vars replaced to a
// file in dir, and returns its path.
func fill(t *testing.T, src, dir string, vars map[string]string) string {
	t.Helper()
	text, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		pairs = append(pairs, "@"+k+"@", vars[k])
	}
	out := strings.NewReplacer(pairs...).Replace(string(text))
	if left := unfilled.FindString(out); left != "" {
		t.Fatalf("%s: placeholder %s left unfilled", src, left)
	}
	path := filepath.Join(dir, filepath.Base(src))
	write(t, path, out, 0o644)
	return path
}

// slowBackend serves GET /slow?ms=N after N ms, for the servers that
// proxy /slow (nginx, caddy, lighttpd, h2o), and returns its address.
func slowBackend(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintln(w, "slow")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// gunicorn 20.1 (Debian gunicorn): the arbiter sends READY=1 once its
// listeners exist, before its workers have booted (connections wait in
// the queue meanwhile), and with --preload only once the application
// imported; TERM is its graceful stop; it forks its workers into its own
// process group. Child mode: --reuse-port --bind. Master mode: it takes
// fd 3 by LISTEN_FDS when LISTEN_PID is its own pid, and needs no --bind.
func TestServerGunicorn(t *testing.T) {
	t.Parallel()
	needServer(t, "gunicorn (Debian gunicorn)", "/usr/bin/gunicorn", "--version")
	for _, sockets := range []string{"child", "master"} {
		t.Run(sockets, func(t *testing.T) {
			t.Parallel()
			command := []string{"/usr/bin/gunicorn", "--chdir", servers(t), "--workers", "2", "--graceful-timeout", "8", "--preload"}
			if sockets == "child" {
				command = append(command, "--reuse-port", "--bind", "{listen}")
			}
			runServer(t, testkit.FreeAddr(t), serverCase{
				sockets: sockets,
				command: append(command, "app:app"),
				readyBy: "notify",
				forks:   2,
				slow:    "/slow?ms=1000",
			})
		})
	}
}

// Without --preload gunicorn's arbiter sends READY=1 before its workers
// import the application: a build that does not import is taken as ready,
// the reload succeeds, the old generation drains, and then every new
// arbiter exits 3 ("Worker failed to boot"), over and over. With
// --preload the arbiter imports it first and exits 1 before READY=1, so
// the reload rolls back and the old generation serves on.
func TestServerGunicornBrokenBuildRollsBack(t *testing.T) {
	t.Parallel()
	needServer(t, "gunicorn (Debian gunicorn)", "/usr/bin/gunicorn", "--version")
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	config := func(module string) string {
		return fmt.Sprintf("workers: %d\nsockets: master\ncommand: [/usr/bin/gunicorn, --chdir, %s, --workers, '1', --preload, '%s:app']\n",
			serverWorkers, servers(t), module)
	}
	writeConfig(t, cfg, config("app"))
	m := startServerMaster(t, testkit.FreeAddr(t), nil, "--config", cfg)
	before := m.waitReady(serverWorkers)
	probe(t, m.addr, 10)
	writeConfig(t, cfg, config("broken"))
	code, _, errOut := m.ctl("reload")
	if code != 1 || !strings.Contains(errOut, "rolled back") {
		t.Errorf("reload to a build that does not import: exit %d, stderr %q; want 1 and rolled back", code, errOut)
	}
	probe(t, m.addr, 10)
	if st := m.status(); st.Generation != 1 || fmt.Sprint(st.pidsBySlot()) != fmt.Sprint(before) {
		t.Errorf("after the rollback: generation %d, pids %v; want 1 and %v", st.Generation, st.pidsBySlot(), before)
	}
}

// uvicorn 0.17 (Debian python3-uvicorn, seen by /usr/bin/python3 only,
// TRAPS 10): no SO_REUSEPORT option, so no child socket mode; --fd 3 takes
// the inherited socket (it polls a dup of it, not fd 3 itself); no
// sd_notify; TERM and INT drain (the first INT; a second forces). It
// closes idle keep-alive connections as it starts draining, so a reload
// costs about one request per keep-alive client. With --fd it wraps fd 3
// as a unix socket, so asyncio leaves Nagle on for the connections it
// accepts: about 40 ms a keep-alive request unless the listener has
// TCP_NODELAY, which the connections inherit.
func TestServerUvicorn(t *testing.T) {
	t.Parallel()
	needServer(t, "uvicorn (Debian python3-uvicorn)", "/usr/bin/python3", "-c", "import uvicorn")
	runServer(t, testkit.FreeAddr(t), serverCase{
		sockets: "master",
		flags:   []string{"--ready", "listen"},
		command: []string{"/usr/bin/python3", "-m", "uvicorn", "--app-dir", servers(t), "--fd", "3", "--no-access-log", "asgi:app"},
		readyBy: "listen",
		slow:    "/slow?ms=1000",
	})
}

// node (20 here, Debian's 18 elsewhere): listen's reusePort option came
// in node 22.12, so no child socket mode; app.js listens on fd 3 under
// socket activation and drains on SIGTERM as the child contract says, so
// a reload must lose nothing.
func TestServerNode(t *testing.T) {
	t.Parallel()
	needServer(t, "node", "/usr/bin/node", "--version")
	runServer(t, testkit.FreeAddr(t), serverCase{
		sockets: "master",
		flags:   []string{"--ready", "listen"},
		command: []string{"/usr/bin/node", filepath.Join(servers(t), "app.js")},
		readyBy: "listen",
		ours:    true,
		slow:    "/slow?ms=1000",
	})
}

// nginx 1.22 (Debian nginx-light): with its own master process (TRAPS
// 11), which forks worker_processes workers into its process group and
// does not send READY=1; QUIT is its graceful stop (TERM cuts requests).
// Its workers outlive a master killed with SIGKILL, serving on. Child
// mode: listen ... reuseport. Master mode: NGINX="3;" in its environment
// and the same address in listen, without reuseport.
func TestServerNginx(t *testing.T) {
	t.Parallel()
	needServer(t, "nginx (Debian nginx-light)", "/usr/sbin/nginx", "-v")
	for _, sockets := range []string{"child", "master"} {
		t.Run(sockets, func(t *testing.T) {
			t.Parallel()
			addr, dir := testkit.FreeAddr(t), t.TempDir()
			listen := addr
			var flags []string
			if sockets == "child" {
				listen += " reuseport"
			} else {
				cfg := filepath.Join(dir, "prefork.yaml")
				writeConfig(t, cfg, "env:\n  NGINX: \"3;\"\n")
				flags = append(flags, "--config", cfg)
			}
			conf := fill(t, filepath.Join(servers(t), "nginx.conf"), dir, map[string]string{
				"LISTEN": listen, "DIR": dir, "BACKEND": slowBackend(t),
			})
			runServer(t, addr, serverCase{
				sockets: sockets,
				flags:   append(flags, "--ready", "listen", "--stop-signal", "QUIT"),
				command: []string{"/usr/sbin/nginx", "-e", "stderr", "-c", conf,
					"-g", "pid " + dir + "/nginx.{slot}.{generation}.pid;"},
				readyBy: "listen",
				forks:   2,
				slow:    "/slow?ms=1000",
			})
		})
	}
}

// caddy 2.6 (Debian caddy): binds with SO_REUSEPORT and sends READY=1, so
// child socket mode needs no --ready; it cannot take an inherited socket,
// so there is no master socket mode. TERM is its graceful stop. One
// process, no workers. Its home (autosave.json, certificates' storage)
// goes to a directory of the test's own.
func TestServerCaddy(t *testing.T) {
	t.Parallel()
	needServer(t, "caddy (Debian caddy)", "/usr/bin/caddy", "version")
	addr, dir := testkit.FreeAddr(t), t.TempDir()
	host, port, _ := net.SplitHostPort(addr)
	conf := fill(t, filepath.Join(servers(t), "Caddyfile"), dir, map[string]string{
		"HOST": host, "PORT": port, "BACKEND": slowBackend(t),
	})
	runServer(t, addr, serverCase{
		sockets: "child",
		env:     []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_DATA_HOME=" + dir},
		command: []string{"/usr/bin/caddy", "run", "--config", conf, "--adapter", "caddyfile"},
		readyBy: "notify",
		slow:    "/slow?ms=1000",
	})
}

// lighttpd 1.4.69 (Debian lighttpd): no SO_REUSEPORT option, so no child
// socket mode; with server.systemd-socket-activation it takes fd 3 by
// LISTEN_FDS (the configured address must be the --listen address: any
// other it binds itself); no sd_notify; INT is its graceful stop (TERM
// cuts requests in flight), and it closes idle keep-alive connections as
// it starts draining. One process: server.max-worker's parent exits at
// once on INT, leaving its workers to the master's kill.
func TestServerLighttpd(t *testing.T) {
	t.Parallel()
	needServer(t, "lighttpd (Debian lighttpd)", "/usr/sbin/lighttpd", "-v")
	addr, dir := testkit.FreeAddr(t), t.TempDir()
	host, port, _ := net.SplitHostPort(addr)
	backendHost, backendPort, _ := net.SplitHostPort(slowBackend(t))
	conf := fill(t, filepath.Join(servers(t), "lighttpd.conf"), dir, map[string]string{
		"HOST": host, "PORT": port, "WWW": filepath.Join(servers(t), "www"),
		"BACKENDHOST": backendHost, "BACKENDPORT": backendPort,
	})
	runServer(t, addr, serverCase{
		sockets: "master",
		flags:   []string{"--ready", "listen", "--stop-signal", "INT"},
		command: []string{"/usr/sbin/lighttpd", "-D", "-f", conf},
		readyBy: "listen",
		slow:    "/slow?ms=1000",
	})
}

// h2o 2.2.5 (Debian h2o): no SO_REUSEPORT option, so no child socket
// mode; it takes fd 3 by Server::Starter's SERVER_STARTER_PORT (given
// here by the config file's env:, with a placeholder), matched to its
// listen entry by the socket's address; no sd_notify; TERM is its
// graceful stop (INT kills it). Draining, it answers the next request of
// each keep-alive connection with Connection: close and leaves idle ones
// open until its idle timeout. One process with threads, and a crash
// handler (perl) forked at start, in its process group.
func TestServerH2O(t *testing.T) {
	t.Parallel()
	needServer(t, "h2o (Debian h2o)", "/usr/bin/h2o", "--version")
	addr, dir := testkit.FreeAddr(t), t.TempDir()
	host, port, _ := net.SplitHostPort(addr)
	conf := fill(t, filepath.Join(servers(t), "h2o.conf"), dir, map[string]string{
		"HOST": host, "PORT": port, "WWW": filepath.Join(servers(t), "www"), "BACKEND": slowBackend(t),
	})
	cfg := filepath.Join(dir, "prefork.yaml")
	writeConfig(t, cfg, "env:\n  SERVER_STARTER_PORT: \"{listen}=3\"\n")
	runServer(t, addr, serverCase{
		sockets: "master",
		flags:   []string{"--config", cfg, "--ready", "listen"},
		command: []string{"/usr/bin/h2o", "-c", conf},
		readyBy: "listen",
		forks:   1, // its crash handler, not a worker
		slow:    "/slow?ms=1000",
	})
}

// runServer runs every step of one case on addr.
func runServer(t *testing.T, addr string, sc serverCase) {
	args := []string{"--workers", strconv.Itoa(serverWorkers), "--sockets", sc.sockets, "--drain-timeout", "10s"}
	args = append(append(append(args, sc.flags...), "--"), sc.command...)
	m := startServerMaster(t, addr, sc.env, args...)
	var figures []string
	step := func(name string, run func() string) {
		start := time.Now()
		figures = append(figures, run())
		t.Logf("%s took %v", name, time.Since(start).Round(time.Millisecond))
	}
	step("start", func() string { return serverReady(t, m, sc) })
	step("kill -9", func() string { return serverKill(t, m, sc) })
	step("reload 1", func() string { return serverReload(t, m, sc, 2) })
	// The second one rolling (issue 15): one slot at a time, each new
	// child ready before the old one of its slot drains.
	step("reload 2, rolling", func() string { return serverReload(t, m, sc, 3, "--strategy", "rolling") })
	step("stop", func() string { return serverStop(t, m, sc) })
	t.Logf("figures: %s", strings.Join(figures, "; "))
}

// startServerMaster is startMasterOn for a server that forks workers of
// its own: whatever is left of its children's process groups is killed
// after the master and its children, so that no worker outlives a failed
// test (nginx's outlive their master for good).
func startServerMaster(t *testing.T, addr string, env []string, args ...string) *master {
	t.Helper()
	var m *master
	// Registered first, so run last.
	t.Cleanup(func() {
		if m != nil {
			killGroups(m)
		}
	})
	m = startMasterOn(t, addr, env, args...)
	return m
}

// serverReady waits for every slot to be ready, by the expected means, and
// for the service to answer.
func serverReady(t *testing.T, m *master, sc serverCase) string {
	t.Helper()
	lines := m.waitMsg(30*time.Second, serverWorkers, "child ready")
	var slowest float64
	for _, l := range lines {
		if by := l.str("by"); by != sc.readyBy {
			t.Errorf("slot %d ready by %q, want %q: %v", l.int("slot"), by, sc.readyBy, l)
		}
		if ms, _ := l["after_ms"].(float64); ms > slowest {
			slowest = ms
		}
	}
	probe(t, m.addr, 10)
	return fmt.Sprintf("ready by %s after %.0f ms (slowest of %d)", sc.readyBy, slowest, serverWorkers)
}

// serverKill kills slot 0's child with SIGKILL: the slot gets a new ready
// child, the service answers, and no process of the killed child's tree
// is left (a zombie is gone: TRAPS 8).
func serverKill(t *testing.T, m *master, sc serverCase) string {
	t.Helper()
	var victim int
	for _, l := range m.lines("child ready") {
		if l.int("slot") == 0 {
			victim = l.int("pid")
		}
	}
	var tree []int
	eventually(t, 10*time.Second, fmt.Sprintf("child %d and its %d workers", victim, sc.forks), func() bool {
		tree = testkit.Descendants(victim)
		return len(tree) >= 1+sc.forks
	})
	if err := killPID(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	again := m.waitLog(30*time.Second, 1, "slot 0 ready again", func(l logLine) bool {
		return l.msg() == "child ready" && l.int("slot") == 0 && l.int("pid") != victim
	})[0]
	took := logTime(t, again).Sub(killed)
	eventually(t, 5*time.Second, fmt.Sprintf("every process of the killed child's tree %v gone", tree), func() bool {
		return len(testkit.AliveOf(tree)) == 0
	})
	probe(t, m.addr, 10)
	return fmt.Sprintf("kill -9: slot ready again after %v, %d processes of its tree gone", took.Round(time.Millisecond), len(tree))
}

// serverReload reloads (`master reload` with args) under light keep-alive
// load, waits until the old generation is gone and returns what the load
// saw.
func serverReload(t *testing.T, m *master, sc serverCase, gen int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan *loadResult, 1)
	go func() { done <- runLoad(ctx, m.addr, keepAlive, 2, 200_000) }()
	probe(t, m.addr, 10)
	code, out, errOut := m.ctl(append([]string{"reload"}, args...)...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", gen)) {
		t.Fatalf("reload %v to generation %d: exit %d, stdout %q, stderr %q", args, gen, code, out, errOut)
	}
	waitOldGone(t, m, gen)
	probe(t, m.addr, 10)
	cancel()
	r := <-done
	r.mode = keepAlive
	t.Logf("reload to generation %d, %v: %v", gen, r.mode, r)
	if r.ok == 0 {
		t.Errorf("reload to generation %d: no request served; the load did not run: %v", gen, r)
	}
	if sc.ours && r.failed() != 0 {
		t.Errorf("reload to generation %d: %d failed requests: %v", gen, r.failed(), r)
	}
	return fmt.Sprintf("reload %d%s: %d failed of %d", gen-1, strings.Join(append([]string{""}, args...), " "), r.failed(), r.ok+r.failed())
}

// serverStop stops the master (SIGTERM) with a request in flight: it is
// answered, every child exits by itself (exit code 0), no process of any
// child's tree is left, and the port is free.
func serverStop(t *testing.T, m *master, sc serverCase) string {
	t.Helper()
	inFlight := sendPath(t, m.addr, sc.slow)
	// Accepted is not yet read: let the request reach the application
	// (or nginx's and caddy's upstream).
	time.Sleep(300 * time.Millisecond)
	m.signal(syscall.SIGTERM)
	status, err := inFlight()
	if err != nil || status != 200 {
		t.Errorf("in-flight %s across the stop: status %d, err %v; want 200", sc.slow, status, err)
	}
	if code := m.wait(30 * time.Second); code != 0 {
		t.Errorf("master exit code %d, want 0 (3: the drain timeout killed a child)", code)
	}
	eventually(t, 5*time.Second, "no process of any child's tree left", func() bool {
		return len(testkit.GroupMembers(m.startedPIDs())) == 0
	})
	if !portFree(m.addr) {
		t.Errorf("%s still has a listener after the master exited", m.addr)
	}
	return fmt.Sprintf("in-flight request at stop: status %d, err %v", status, err)
}

// probe makes n requests for / on new connections; each must get a 200.
func probe(t *testing.T, addr string, n int) {
	t.Helper()
	for range n {
		code, body, err := get(addr, "/")
		if err != nil || code != 200 {
			t.Fatalf("GET /: status %d, err %v, body %q", code, err, body)
		}
	}
}

// waitOldGone waits until every child of a generation before gen has
// exited. It reads the log rather than polling `master status`: each call
// of the race-built client costs a second (the race runtime's exit sleep).
func waitOldGone(t *testing.T, m *master, gen int) {
	t.Helper()
	old := func(l logLine) bool { return l.int("generation") < gen }
	started := 0
	for _, l := range m.lines("child started") {
		if old(l) {
			started++
		}
	}
	m.waitLog(30*time.Second, started, fmt.Sprintf("%d children of generations before %d exited", started, gen), func(l logLine) bool {
		return strings.HasPrefix(l.msg(), "child exited") && old(l)
	})
}

// killGroups kills whatever is left of the process groups of m's
// children. Where the master ran its children in cgroups, only processes
// still in one of them: a child's pid may since have been reused as the
// group of another test's process.
func killGroups(m *master) {
	cgroups := m.lines("each child runs in a cgroup of its own") != nil
	for _, pid := range testkit.GroupMembers(m.startedPIDs()) {
		if ours, _ := testkit.InChildCgroupOf(pid, m.cmd.Process.Pid); cgroups && !ours {
			continue
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
