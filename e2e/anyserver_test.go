package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// A server that knows nothing of prefork, run as it is with flags only:
// Python's http.server, which neither sends READY=1 nor sets
// SO_REUSEPORT. Under --ready listen the first copy is ready once the
// kernel shows it listening; the second cannot bind, and the master says
// why instead of crash-looping in silence, in the log and master status.
func TestReadyListenPlainServer(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "2", "--ready", "listen",
		"--", pythonPath(t), "-m", "http.server", "{port}", "--bind", "{host}")
	ready := m.waitMsg(20*time.Second, 1, "child ready")
	if by := ready[0].str("by"); by != "listen" {
		t.Errorf("ready by %q, want listen", by)
	}
	if code, _, err := get(m.addr, "/"); err != nil || code != 200 {
		t.Errorf("GET /: %d, %v", code, err)
	}
	diag := m.waitMsg(20*time.Second, 1, "slot cannot bind its address")
	hint := diag[0].str("hint")
	for _, want := range []string{"SO_REUSEPORT", "--sockets master", fmt.Sprintf("pid %d", ready[0].int("pid"))} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q lacks %q", hint, want)
		}
	}
	eventually(t, 20*time.Second, "a backoff row with the note", func() bool {
		for _, c := range m.status().Children {
			if c.State == "backoff" && strings.Contains(c.Note, "SO_REUSEPORT") && c.LastExit != "" {
				return true
			}
		}
		return false
	})
}

// Under the default --ready notify, a server that serves but never sends
// READY=1 (the common case) is killed at the ready timeout, and the
// master says to use --ready listen.
func TestServerWithoutNotify(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "1", "--ready-timeout", "2s",
		"--", pythonPath(t), "-m", "http.server", "{port}", "--bind", "{host}")
	late := m.waitMsg(20*time.Second, 1, "child not ready in time; killing it")
	if hint := late[0].str("hint"); !strings.Contains(hint, "--ready listen") {
		t.Errorf("hint %q does not suggest --ready listen", hint)
	}
}

// In master socket mode a server that binds its own port instead of
// taking fd 3 never waits on the socket it was given: under --ready
// listen it is not ready, and the master says it probably does not read
// LISTEN_FDS.
func TestMasterModeServerIgnoresFD3(t *testing.T) {
	t.Parallel()
	other := testkit.FreeAddr(t)
	host, port, _ := net.SplitHostPort(other)
	m := startMaster(t, "--workers", "1", "--sockets", "master", "--ready", "listen", "--ready-timeout", "2s",
		"--", pythonPath(t), "-m", "http.server", port, "--bind", host)
	late := m.waitMsg(20*time.Second, 1, "child not ready in time; killing it")
	if hint := late[0].str("hint"); !strings.Contains(hint, "LISTEN_FDS") {
		t.Errorf("hint %q does not name LISTEN_FDS", hint)
	}
}

// In master socket mode a server that binds the --listen address itself
// fails with "address already in use" (the master holds it): the master
// says what to look for and what to do.
func TestMasterModeServerBindsItself(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "1", "--sockets", "master",
		"--", pythonPath(t), "-m", "http.server", "{port}", "--bind", "{host}")
	hint := m.waitMsg(20*time.Second, 1, "child exited before it took its socket")[0].str("hint")
	if !strings.Contains(hint, "address already in use") || !strings.Contains(hint, "fd 3") {
		t.Errorf("hint %q", hint)
	}
}

// Nothing of a child outlives it: a worker in its process group and a
// daemon that double-forked into a session of its own are both gone once
// the child is killed, and the slot is restarted.
func TestNothingOutlivesChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := fmt.Sprintf(`sleep 300 & echo $! > %[1]s/worker; (setsid sleep 301 & echo $! > %[1]s/daemon); exec sleep 302`, dir)
	m := startMaster(t, "--workers", "1", "--ready", "delay:100ms", "--", "/bin/sh", "-c", script)
	child := m.waitMsg(20*time.Second, 1, "child ready")[0].int("pid")
	names := []string{"worker", "daemon"}
	if m.lines("each child runs in a cgroup of its own") == nil {
		// Without a cgroup, a daemon that left the process group is
		// out of reach: that is what the master warned of at start.
		t.Logf("no child cgroups here (%v): checking the worker alone", m.lines("children share the master's cgroup; what a child leaves behind is killed by process group only (a daemon that left it survives)"))
		names = names[:1]
	}
	// They hold the master's stderr: one left behind would also keep
	// the harness reading it.
	leftovers := func(before []int) []int {
		var pids []int
		for i, name := range names {
			path := filepath.Join(dir, name)
			var pid int
			eventually(t, 10*time.Second, name+"'s pid file", func() bool {
				b, err := os.ReadFile(path)
				if err != nil || !strings.HasSuffix(string(b), "\n") {
					return false
				}
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil && (before == nil || pid != before[i])
			})
			if !testkit.Alive(pid) {
				t.Fatalf("%s: pid %d not running", name, pid)
			}
			pids = append(pids, pid)
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		}
		return pids
	}
	gone := func(pids []int) {
		for _, pid := range pids {
			eventually(t, 10*time.Second, fmt.Sprintf("pid %d gone", pid), func() bool { return !testkit.Alive(pid) })
		}
	}
	first := leftovers(nil)
	if err := killPID(child); err != nil {
		t.Fatal(err)
	}
	m.waitMsg(20*time.Second, 2, "child ready") // the slot serves again
	gone(first)
	// A graceful stop leaves nothing either.
	second := leftovers(first)
	m.signal(syscall.SIGTERM)
	if code := m.wait(20 * time.Second); code != 0 {
		t.Errorf("master exit %d", code)
	}
	gone(second)
}

// --child-output prefix: each line a child writes reaches the master's
// stderr (or stdout) with the child's slot and pid in front.
func TestChildOutputPrefix(t *testing.T) {
	t.Parallel()
	var stdout syncBuffer
	m := startMasterOut(t, filepath.Join(bin, "master"), testkit.FreeAddr(t), nil,
		&syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}, &stdout,
		"--workers", "2", "--child-output", "prefix", "--ready", "delay:100ms",
		"--", "/bin/sh", "-c", "echo to-stdout-{slot}; echo to-stderr-{slot} >&2; exec sleep 300")
	pids := map[int]int{}
	for _, l := range m.waitMsg(20*time.Second, 2, "child started") {
		pids[l.int("slot")] = l.int("pid")
	}
	for slot, pid := range pids {
		errLine := fmt.Sprintf("[slot %d pid %d] to-stderr-%d\n", slot, pid, slot)
		eventually(t, 10*time.Second, "the line "+strconv.Quote(errLine)+" on stderr", func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			return strings.Contains(m.raw.String(), errLine)
		})
		outLine := fmt.Sprintf("[slot %d pid %d] to-stdout-%d\n", slot, pid, slot)
		eventually(t, 10*time.Second, "the line "+strconv.Quote(outLine)+" on stdout", func() bool {
			return strings.Contains(stdout.String(), outLine)
		})
	}
}

// syncBuffer is a bytes.Buffer that a process's output copier writes while
// the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// --stop-signal: a graceful stop sends the child the signal it drains on.
func TestStopSignalReachesChild(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "1", "--stop-signal", "INT", "--ready", "delay:100ms",
		"--", "/bin/sh", "-c", `trap 'exit 7' INT; trap 'exit 9' TERM; while :; do sleep 0.05; done`)
	m.waitMsg(20*time.Second, 1, "child ready")
	m.signal(syscall.SIGTERM)
	exited := m.waitMsg(20*time.Second, 1, "child exited")
	if code := exited[0].int("code"); code != 7 {
		t.Errorf("child exited with %d, want 7 (its SIGINT trap)", code)
	}
	if code := m.wait(20 * time.Second); code != 0 {
		t.Errorf("master exit %d", code)
	}
}

// pythonPath is Debian's python3 (TRAPS 10: pyenv's is first on PATH);
// its standard library's http.server is the plainest server there is.
func pythonPath(t *testing.T) string {
	const path = "/usr/bin/python3"
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s: %v", path, err)
	}
	return path
}

// A child that floods its output while the master's stdout is stalled (a
// pipe nobody reads) blocks only itself: the master answers status,
// reloads and stops as ever.
func TestChildOutputStalled(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	m := startMasterOut(t, filepath.Join(bin, "master"), testkit.FreeAddr(t), nil,
		&syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}, w,
		"--workers", "2", "--child-output", "prefix", "--ready", "delay:100ms", "--", "/usr/bin/yes", "flood")
	w.Close() // the master has its copy; nobody reads r
	m.waitMsg(20*time.Second, 2, "child ready")
	if st := m.status(); len(st.Children) != 2 {
		t.Errorf("status: %+v", st)
	}
	if code, _, errOut := m.ctl("reload"); code != 0 {
		t.Errorf("reload: exit %d: %s", code, errOut)
	}
	m.signal(syscall.SIGTERM)
	if code := m.wait(20 * time.Second); code != 0 {
		t.Errorf("master exit %d", code)
	}
}
