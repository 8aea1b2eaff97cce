package e2e

import (
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

// squatter tries to bind and listen on the address argv[1], with
// SO_REUSEPORT and with or without SO_REUSEADDR, and prints "bound" if
// it could, else the errors.
const squatter = `
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
errs = []
for reuseaddr in (1, 0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuseaddr)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((host, int(port)))
        s.listen(8)
        print("bound")
        sys.exit(0)
    except OSError as e:
        errs.append(e.strerror)
    s.close()
print("; ".join(errs))
`

// squat runs squatter as uid once and returns what it printed.
func squat(t *testing.T, uid uint32, addr string) string {
	t.Helper()
	python := needRootAndPython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", squatter, addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("squatter: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// In child socket mode, no other user can bind the listen address while
// the master runs (issue 12, item 7), even when no child listens on it:
// between a child's death and its successor's bind. The successors start
// through a gate that holds them before they bind, which makes the gap as
// long as the test needs. On main the squatter bound the address in the
// gap, and answered every request from then on.
func TestOtherUserCannotTakeTheAddress(t *testing.T) {
	t.Parallel()
	needRootAndPython(t)
	for _, tt := range []struct {
		name    string
		args    []string
		squatAs uint32
	}{
		{name: "children of the master's user", squatAs: nobody},
		{name: "children of another user", args: []string{"--user", "nobody"}, squatAs: 1}, // daemon
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := sharedDir(t, 0o755)
			gate := filepath.Join(dir, "open")
			wrapper := filepath.Join(dir, "gated")
			script := "#!/bin/sh\nwhile [ ! -e " + gate + " ]; do sleep 0.02; done\nexec " + filepath.Join(bin, "child") + "\n"
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			addr := testkit.FreeAddr(t)
			m := startMasterOn(t, addr, nil, append([]string{"--workers", "1"}, append(tt.args, "--", wrapper)...)...)

			// The first child starts at once; each successor waits at
			// the gate until the squatter has tried.
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			pid := m.waitMsg(15*time.Second, 1, "child ready")[0].int("pid")
			if err := os.Remove(gate); err != nil {
				t.Fatal(err)
			}
			for round := 1; round <= 2; round++ {
				if err := killPID(pid); err != nil {
					t.Fatal(err)
				}
				m.waitMsg(15*time.Second, round+1, "child started")
				if got := squat(t, tt.squatAs, addr); got == "bound" {
					t.Errorf("restart %d: uid %d bound %s between a killed child and its successor", round, tt.squatAs, addr)
				}
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				pid = m.waitMsg(15*time.Second, round+1, "child ready")[round].int("pid")
				if w, err := getWhoami(addr); err != nil || w.PID != pid {
					t.Fatalf("restart %d: request answered by %+v, %v; want the slot's child, pid %d", round, w, err, pid)
				}
				if err := os.Remove(gate); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
