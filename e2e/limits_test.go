package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
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
