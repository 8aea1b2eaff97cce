package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/supervisor"
)

// runMasterLimited runs bin/master with its descriptor limit (soft and
// hard) set to nofile by a shell.
func runMasterLimited(t *testing.T, nofile string, args ...string) (int, string, string) {
	t.Helper()
	// A master that starts instead of refusing is killed after this.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `ulimit -n "$0" && exec "$@"`, nofile,
		filepath.Join(bin, "master")}, args...)...)
	cmd.SysProcAttr = asPdeath()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("master %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// ulimit -n 64 in master mode with 32 workers (issue 12, item 9): the
// master refuses to start, saying how many descriptors it needs. On
// main it started 13 of the 32 children and ran on.
func TestRefusesTooLowFDLimit(t *testing.T) {
	t.Parallel()
	control := filepath.Join(t.TempDir(), "ctl.sock")
	code, _, errOut := runMasterLimited(t, "64", "run", "--log-format", "json", "--listen", testkit.FreeAddr(t),
		"--control", control, "--metrics", "", "--sockets", "master", "--workers", "32", "--ready-timeout", "5s",
		"--", filepath.Join(bin, "child"))
	if code != 2 || !strings.Contains(errOut, "file descriptors, the limit is 64 (ulimit -n)") ||
		strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("master at ulimit -n 64 with 32 workers: exit %d, stderr:\n%s\nwant 2 and one line with what it needs", code, errOut)
	}
}

// asPdeath is the attributes of a process that dies with the test.
func asPdeath() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// idleClients opens argv[2] connections to the TCP address argv[1],
// sends one keep-alive request on each and keeps them all open.
const idleClients = `
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
held = []
for _ in range(int(sys.argv[2])):
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(s)
    except OSError:
        pass
print("ready", flush=True)
time.sleep(600)
`

// Idle connections on the metrics port (another user's) and the control
// socket (the master's own user's: no other may connect) at a limit of
// 256 descriptors (issue 12, item 5): a killed child is restarted at
// once and master status answers. On main the master ran out of
// descriptors: the child was not restarted for minutes and status timed
// out.
func TestIdleConnectionsCannotStopRestarts(t *testing.T) {
	t.Parallel()
	needRootAndPython(t)
	wrapper := filepath.Join(t.TempDir(), "master")
	script := "#!/bin/sh\nulimit -n 256 && exec " + filepath.Join(bin, "master") + ` "$@"` + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	metrics := testkit.FreeAddr(t)
	m := startMasterBin(t, wrapper, testkit.FreeAddr(t), nil, asPdeath(), "--workers", "1", "--metrics", metrics)
	ready := m.waitReady(1)

	const hostile = 300
	startHelper(t, idleClients, metrics, strconv.Itoa(hostile))
	for range hostile {
		c, err := net.DialTimeout("unix", m.control, time.Second)
		if err != nil {
			continue // a full backlog: what it holds already counts
		}
		t.Cleanup(func() { c.Close() })
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n"))
	}

	killed := time.Now()
	if err := killPID(ready[0]); err != nil {
		t.Fatal(err)
	}
	m.waitLog(10*time.Second, 1, "of a restarted child ready", func(l logLine) bool {
		return l.msg() == "child ready" && l.int("pid") != ready[0]
	})
	t.Logf("a killed child's successor was ready %v after the kill", time.Since(killed).Round(time.Millisecond))
	asked := time.Now()
	if code, out, errOut := m.ctl("status"); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("master status with idle connections open: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("master status answered in %v", time.Since(asked).Round(time.Millisecond))
	if code, _, err := get(metrics, "/healthz"); err != nil && code != 0 {
		t.Logf("/healthz with the cap reached: %d %v (refusing it is allowed)", code, err)
	}
	// The idle connections past the cap were closed, and counted. A
	// scrape takes the place of one of them too.
	_, body, err := get(metrics, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	evicted := regexp.MustCompile(`(?m)^prefork_connections_refused_total\{endpoint="metrics",reason="evicted"\} (\d+)$`).FindSubmatch(body)
	if evicted == nil {
		t.Fatalf("no evicted count of the metrics endpoint in /metrics:\n%s", body)
	}
	if n, _ := strconv.Atoi(string(evicted[1])); n < hostile-supervisor.MetricsConnCap {
		t.Errorf("metrics endpoint: %d connections evicted, want at least %d", n, hostile-supervisor.MetricsConnCap)
	}
}
