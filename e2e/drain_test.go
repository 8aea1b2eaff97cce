package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// A child drained (SIGTERM) under continuous load, with other children in
// the group, fails no request: keep-alive clients move over on the
// Connection: close of their last answer, and what was queued on the
// child's listener migrates to the others (tcp_migrate_req=1, set in a
// network namespace of the test's own).
func TestDrainUnderLoadLosesNothing(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	const n = 4
	m := startMaster(t, "--workers", strconv.Itoa(n), "--drain-timeout", "10s")
	ready := m.waitReady(n)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := make(chan *loadResult, 2)
	for _, mode := range []loadMode{keepAlive, perRequest} {
		go func() { results <- runLoad(ctx, m.addr, mode, 16, 2_000_000) }()
	}
	// Drain each slot's child in turn; the master replaces each one.
	for slot := range n {
		waitServed(t, m, 200)
		if err := syscall.Kill(ready[slot], syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		m.waitLog(20*time.Second, 1, fmt.Sprintf("a replacement ready in slot %d", slot), func(l logLine) bool {
			return l.msg() == "child ready" && l.int("slot") == slot && l.int("pid") != ready[slot]
		})
		exit := m.waitLog(20*time.Second, 1, "the drained child's exit", func(l logLine) bool {
			return l.int("pid") == ready[slot] && strings.HasPrefix(l.msg(), "child exited")
		})[0]
		if exit.int("code") != 0 {
			t.Errorf("drained child %d exited with %v, want code 0", ready[slot], exit)
		}
	}
	waitServed(t, m, 200)
	cancel()
	for range 2 {
		r := <-results
		t.Logf("load: %v", r)
		if r.failed() != 0 {
			t.Errorf("failed requests across %d drains: %v", n, r)
		}
		if r.ok < 1000 {
			t.Errorf("only %d requests served; the load did not run", r.ok)
		}
	}
}

// waitServed lets the running load make progress: it returns once n more
// requests on fresh connections got their answer.
func waitServed(t *testing.T, m *master, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := getWhoami(m.addr); err != nil {
			t.Fatalf("probe request: %v", err)
		}
	}
}

// As PID 1 of a container, the master reaps orphaned grandchildren too:
// none stays a zombie.
func TestPID1ReapsOrphans(t *testing.T) {
	t.Parallel()
	// The subshell starts a sleep and exits, orphaning the sleep; the child
	// then becomes the reference child.
	script := "(sleep 3 &); exec " + filepath.Join(bin, "child")
	m := startMasterSys(t, testkit.FreeAddr(t), nil,
		&syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: syscall.CLONE_NEWPID},
		"--workers", "1", "--", "/bin/sh", "-c", script)
	m.waitReady(1)
	master := m.cmd.Process.Pid
	// Find the orphan from outside by its new parent: the master.
	var orphan int
	eventually(t, 5*time.Second, "the orphaned sleep re-parented to the master", func() bool {
		for _, pid := range testkit.ChildrenOf(master) {
			if comm(pid) == "sleep" {
				orphan = pid
				return true
			}
		}
		return false
	})
	eventually(t, 10*time.Second, fmt.Sprintf("orphan %d reaped (gone from /proc, not a zombie)", orphan), func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
		return err != nil
	})
	m.signal(syscall.SIGTERM)
	if code := m.wait(10 * time.Second); code != 0 {
		t.Fatalf("master exit code %d, want 0", code)
	}
}

func comm(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}
