package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// ctlWithin runs a client command of bin/master against m's control
// socket, giving up after d: a master that does not answer is a failure
// to report, not a test that hangs.
func (m *master) ctlWithin(d time.Duration, args ...string) (code int, stdout, stderr string, ok bool) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	full := append([]string{args[0], "--control", m.control}, args[1:]...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "master"), full...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		return 0, out.String(), errOut.String(), false
	}
	if err != nil && cmd.ProcessState == nil {
		m.t.Fatalf("master %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String(), true
}

// healthz returns the status of GET /healthz on addr, 0 when there is no
// answer within 5 s.
func healthz(addr string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A fifo as --config at reload is refused at once, in one line, and
// supervision never stops: a child killed with -9 is restarted, status
// and /healthz answer, an empty file is refused too, a good file reloads,
// and SIGTERM stops the master.
func TestConfigFifoAtReload(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	writeConfig(t, cfg, childConfig(2, ""))
	metricsAddr := testkit.FreeAddr(t)
	m := startMaster(t, "--config", cfg, "--metrics", metricsAddr)
	ready := m.waitReady(2)

	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code   int
		errOut string
		ok     bool
		took   time.Duration
	}
	reloaded := make(chan result, 1)
	go func() {
		start := time.Now()
		code, _, errOut, ok := m.ctlWithin(15*time.Second, "reload")
		reloaded <- result{code: code, errOut: errOut, ok: ok, took: time.Since(start)}
	}()

	// Supervision goes on, whatever the reload does.
	if err := killPID(ready[0]); err != nil {
		t.Fatal(err)
	}
	m.waitMsg(10*time.Second, 3, "child ready")
	if code, out, errOut, ok := m.ctlWithin(5*time.Second, "status"); !ok || code != 0 {
		t.Errorf("master status during the reload: answered %v, exit %d: %s%s", ok, code, out, errOut)
	}
	if code := healthz(metricsAddr); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}

	r := <-reloaded
	if !r.ok || r.code != 1 || !strings.Contains(r.errOut, "is not a regular file (it is a fifo)") ||
		strings.Count(strings.TrimRight(r.errOut, "\n"), "\n") != 0 {
		t.Errorf("reload with a fifo: answered %v, exit %d after %v, stderr %q; want 1 and one line: not a regular file",
			r.ok, r.code, r.took, r.errOut)
	}

	// An empty file (a deploy truncated it) is refused; the service
	// stays where it was.
	os.Remove(cfg)
	writeConfig(t, cfg, "")
	if code, _, errOut, ok := m.ctlWithin(15*time.Second, "reload"); !ok || code != 1 || !strings.Contains(errOut, "truncated") {
		t.Errorf("reload with an empty file: answered %v, exit %d, stderr %q; want 1 and truncated", ok, code, errOut)
	}
	writeConfig(t, cfg, childConfig(2, ""))
	if code, out, errOut, ok := m.ctlWithin(30*time.Second, "reload"); !ok || code != 0 || !strings.Contains(out, "generation 2 serves") {
		t.Errorf("reload with a good file: answered %v, exit %d: %s%s", ok, code, out, errOut)
	}
	if _, err := getWhoami(m.addr); err != nil {
		t.Errorf("service after the reloads: %v", err)
	}

	m.signal(syscall.SIGTERM)
	if code := m.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// At start, a config that is not a regular file of at most 1 MiB that
// sets something is one line on stderr and exit 2, at once: a fifo never
// hangs the master, /dev/zero never fills its memory.
func TestConfigNotARegularFileAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	writeConfig(t, empty, "")
	big := filepath.Join(dir, "big.yaml")
	writeConfig(t, big, "workers: 2\n#"+strings.Repeat("x", 2<<20)+"\n")
	tests := []struct {
		name, path, want string
	}{
		{name: "fifo", path: fifo, want: "is not a regular file (it is a fifo)"},
		{name: "dev zero", path: "/dev/zero", want: "is not a regular file (it is a character device)"},
		{name: "directory", path: dir, want: "is not a regular file (it is a directory)"},
		{name: "larger than 1 MiB", path: big, want: "larger than 1 MiB"},
		{name: "empty", path: empty, want: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(filepath.Join(bin, "master"), "run", "--listen", testkit.FreeAddr(t),
				"--control", "", "--metrics", "", "--config", tt.path, "--", "/bin/true")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.WaitDelay = time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			start := time.Now()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("master still running 5 s after start with --config %s; stderr %.300q", tt.path, stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if code := cmd.ProcessState.ExitCode(); code != 2 || strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d after %v, stderr %q; want 2 and one line with %q", code, time.Since(start), out, tt.want)
			}
		})
	}
}
