package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// Bad input: exit 2 and one line on stderr, before any child starts.
func TestBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	// A command that leaves a mark if it ever runs.
	probe := filepath.Join(dir, "probe.sh")
	write(t, probe, "#!/bin/sh\ntouch "+marker+"\nexec sleep 60\n", 0o755)
	notExec := filepath.Join(dir, "notexec.sh")
	write(t, notExec, "#!/bin/sh\n", 0o644)
	badYAML := filepath.Join(dir, "bad.yaml")
	write(t, badYAML, "workers: [\n", 0o644)
	unknownKey := filepath.Join(dir, "unknown.yaml")
	write(t, unknownKey, "workers: 2\nwrokers: 3\n", 0o644)
	badValue := filepath.Join(dir, "badvalue.yaml")
	write(t, badValue, "ready-timeout: soon\n", 0o644)
	unreadable := filepath.Join(dir, "absent.yaml")
	// A directory where a master running as nobody can make its control
	// socket.
	ctlDir := openDir(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name string
		args []string // after "run --listen ADDR"
		env  []string
		addr string // default: a free port
		want string // in the error line
		// cred runs the master as another user; it must then name a
		// command that user can reach.
		cred *syscall.Credential
		// skip, when not "", is why the case cannot run here.
		skip string
	}{
		{name: "zero workers", args: []string{"--workers", "0"}, want: "workers"},
		{name: "workers not a number", args: []string{"--workers", "abc"}, want: "workers"},
		{name: "workers from env not a number", env: []string{"PREFORK_WORKERS=abc"}, want: "workers"},
		{name: "malformed listen", addr: "127.0.0.1", want: "listen"},
		{name: "listen not an ip", addr: "nowhere:80", want: "listen"},
		{name: "port bound by another program", addr: busy.Addr().String(), want: "already in use"},
		{name: "missing command", args: []string{"--", filepath.Join(dir, "absent")}, want: "command"},
		{name: "command not executable", args: []string{"--", notExec}, want: "command"},
		{name: "unreadable config", args: []string{"--config", unreadable}, want: "config"},
		{name: "invalid config", args: []string{"--config", badYAML}, want: "config"},
		{name: "unknown key in config", args: []string{"--config", unknownKey}, want: "wrokers"},
		{name: "bad value in config", args: []string{"--config", badValue}, want: "soon"},
		{name: "bad duration flag", args: []string{"--drain-timeout", "forever"}, want: "drain-timeout"},
		{name: "unknown flag", args: []string{"--wrokers", "2"}, want: "wrokers"},
		{name: "unknown sockets mode", args: []string{"--sockets", "both"}, want: "sockets"},
		{name: "metrics port in use", args: []string{"--metrics", busy.Addr().String()}, want: "metrics"},
		{name: "bad watchdog", args: []string{"--watchdog", "often"}, want: "watchdog"},
		{name: "watchdog too short", args: []string{"--watchdog", "1ms"}, want: "watchdog"},
		{name: "bad max-rss", args: []string{"--max-rss", "huge"}, want: "max-rss"},
		{name: "negative max-accepts", args: []string{"--max-accepts", "-1"}, want: "max-accepts"},
		{name: "unknown steer mode", args: []string{"--steer", "sometimes"}, want: "steer"},
		{
			// Without root the kernel refuses to load the program.
			name: "steer on where the program cannot load", cred: nobody, skip: unprivilegedBPFAllowed(),
			args: []string{"--sockets", "master", "--steer", "on", "--control", filepath.Join(ctlDir, "control.sock"),
				"--metrics", "", "--", "/bin/true"},
			want: "steer: on, but the steering program cannot load",
		},
		{name: "unknown user", args: []string{"--user", "no-such-user-here"}, want: `user: no user "no-such-user-here"`},
		{name: "unknown group", args: []string{"--user", "nobody", "--group", "no-such-group-here"}, want: "group: no group"},
		{
			// An unprivileged master cannot start children as another user.
			name: "user switch without the right", cred: nobody,
			args: []string{"--user", "root", "--control", "", "--metrics", "", "--", "/bin/true"},
			want: "needs root or CAP_SETUID",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cred != nil && os.Geteuid() != 0 {
				t.Skip("needs root to start the master as another user")
			}
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			addr := tt.addr
			if addr == "" {
				addr = testkit.FreeAddr(t)
			}
			args := append([]string{"run", "--listen", addr}, tt.args...)
			if !slices.Contains(tt.args, "--") {
				args = append(args, "--", probe)
			}
			cmd := exec.Command(filepath.Join(bin, "master"), args...)
			cmd.Env = append(os.Environ(), tt.env...)
			if tt.cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tt.cred}
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.WaitDelay = time.Second
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("master still running after 20 s on bad input; stderr:\n%s", stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit code %d (%v), want 2", code, err)
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want one line mentioning %q", out, tt.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("a child started despite the bad input")
				os.Remove(marker)
			}
		})
	}
}

// openDir returns a new directory that every user may write to, removed
// at the end of the test. (A t.TempDir sits in a directory only its owner
// may enter.)
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "prefork-e2e-open-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// unprivilegedBPFAllowed says why a process without capabilities might
// use bpf(2) here, or returns "" when kernel.unprivileged_bpf_disabled
// forbids it every use, and so surely forbids loading the steering
// program.
func unprivilegedBPFAllowed() string {
	const knob = "/proc/sys/kernel/unprivileged_bpf_disabled"
	b, err := os.ReadFile(knob)
	if err != nil {
		return fmt.Sprintf("cannot tell whether unprivileged BPF is allowed: %v", err)
	}
	if v := strings.TrimSpace(string(b)); v == "0" {
		return knob + " is 0: unprivileged BPF is allowed, so running as nobody is not sure to make the load fail"
	}
	return ""
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
