package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// nobody is the uid and gid of the other user of these tests.
const nobody = 65534

// asNobody is the process attributes of a helper run as nobody: it dies
// with the test.
func asNobody() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
}

// needRootAndPython skips a test that runs a Python helper as another
// user.
func needRootAndPython(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as another user")
	}
	const python = "/usr/bin/python3" // TRAPS 10: not pyenv's
	if _, err := os.Stat(python); err != nil {
		t.Skip("needs /usr/bin/python3")
	}
	return python
}

// startHelper runs a Python script as nobody and waits until it prints
// "ready". It is killed, by pid, when the test ends.
func startHelper(t *testing.T, script string, args ...string) *exec.Cmd {
	t.Helper()
	python := needRootAndPython(t)
	cmd := exec.Command(python, append([]string{"-c", script}, args...)...)
	cmd.SysProcAttr = asNobody()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				break
			}
		}
		ready <- false
		for sc.Scan() { // keep draining: a full pipe would block it
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the helper ended before it was ready")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the helper was not ready within 30 s")
	}
	return cmd
}

// sharedDir returns a directory that nobody may enter (mode), removed
// when the test ends. t.TempDir's parent is private to root.
func sharedDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "prefork-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runMasterAs runs a client command of bin/master as nobody.
func runMasterAs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "master"), args...)
	cmd.SysProcAttr = asNobody()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("master %v as nobody: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// fakeMaster listens on a unix socket at argv[1] and answers every
// request as a master whose reload succeeded would.
const fakeMaster = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(16)
print("ready", flush=True)
body = b'{"generation":99}'
while True:
    c, _ = s.accept()
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    c.close()
`

// Another user's socket at the control path (issue 12, item 6): the
// client refuses to talk to it, and the master refuses to start on it,
// each in one line that says whose it is. On main, `master reload`
// printed the fake's "generation 99 serves" and exited 0.
func TestControlSquattedByAnotherUser(t *testing.T) {
	t.Parallel()
	path := filepath.Join(sharedDir(t, 0o777|os.ModeSticky), "prefork.sock")
	startHelper(t, fakeMaster, path)

	code, out, errOut := runMaster(t, "reload", "--control", path)
	if code == 0 || strings.Contains(out, "generation 99") || !strings.Contains(errOut, "uid 65534") ||
		!strings.Contains(errOut, "refusing") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("master reload against another user's socket: exit %d, stdout %q, stderr %q; want 1 and one line naming uid 65534",
			code, out, errOut)
	}
	code, _, errOut = runMaster(t, "status", "--control", path)
	if code == 0 || !strings.Contains(errOut, "uid 65534") {
		t.Errorf("master status against another user's socket: exit %d, stderr %q", code, errOut)
	}

	code, _, errOut = runMaster(t, "run", "--listen", testkit.FreeAddr(t), "--control", path, "--metrics", "",
		"--workers", "1", "--", filepath.Join(bin, "child"))
	if code != 2 || !strings.Contains(errOut, "uid 65534, another user") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("master run on another user's socket: exit %d, stderr %q; want 2 and one line saying whose it is", code, errOut)
	}
}

// A user who may not connect to the control socket is told so, not that
// no master is running; one who can connect (the socket's mode widened)
// but is neither the master's user nor root is refused by the master
// (SO_PEERCRED), which logs it. On main: "no master is running", and the
// status of the other user was answered.
func TestControlOtherUsers(t *testing.T) {
	t.Parallel()
	needRootAndPython(t)
	control := filepath.Join(sharedDir(t, 0o755), "prefork.sock")
	m := startMasterOn(t, testkit.FreeAddr(t), nil, "--workers", "1", "--control", control)
	m.control = control
	m.waitReady(1)

	code, _, errOut := runMasterAs(t, "status", "--control", control)
	if code != 1 || strings.Contains(errOut, "no master is running") || !strings.Contains(errOut, "permission denied") ||
		!strings.Contains(errOut, "root") {
		t.Errorf("status as nobody on root's 0600 socket: exit %d, stderr %q; want 1 and permission denied, root's", code, errOut)
	}

	if err := os.Chmod(control, 0o666); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMasterAs(t, "status", "--control", control)
	if code == 0 || strings.Contains(out, "SLOT") {
		t.Errorf("status as nobody on a widened socket: exit %d, stdout %q, stderr %q; want refused", code, out, errOut)
	}
	m.waitLog(10*time.Second, 1, "the master's refusal of uid 65534", func(l logLine) bool {
		return l.msg() == "refused connections" && l.str("endpoint") == "control" && strings.Contains(l.str("reason"), "uid 65534")
	})
	if code, out, errOut := m.ctl("status"); code != 0 || !strings.Contains(out, "SLOT") {
		t.Errorf("status as root: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// A master run as a service user (systemd's DynamicUser= or User=, with
// its socket in its RuntimeDirectory=) is one root's client talks to: the
// socket's directory is the service's own, under directories only root
// may write, so no one else could have put it there. The same socket in
// a directory anyone may write to (TestControlSquattedByAnotherUser) is
// refused.
func TestControlServiceUser(t *testing.T) {
	t.Parallel()
	needRootAndPython(t)
	run := filepath.Join(sharedDir(t, 0o755), "prefork")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(run, "prefork.sock")
	startHelper(t, fakeMaster, path)
	if code, out, errOut := runMaster(t, "reload", "--control", path); code != 0 || !strings.Contains(out, "generation 99 serves") {
		t.Errorf("root's reload of the service user's master: exit %d, stdout %q, stderr %q; want it answered", code, out, errOut)
	}
	// The same directory made writable by others: anyone could have put
	// the socket there.
	if err := os.Chmod(run, 0o733); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runMaster(t, "reload", "--control", path); code == 0 || !strings.Contains(errOut, "refusing") {
		t.Errorf("reload through a directory others may write: exit %d, stderr %q; want refused", code, errOut)
	}
}
