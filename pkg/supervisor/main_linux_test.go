package supervisor

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coreos/go-systemd/v22/daemon"
)

// testRole, in the environment, makes the test binary play a child.
const testRole = "SUPERVISOR_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(testRole) {
	case "":
		goleak.VerifyTestMain(m) // exits; fails on a goroutine left running
	case "child":
		os.Exit(playChild())
	}
	os.Exit(3)
}

// playChild says READY=1 and waits for SIGTERM, then exits 0.
func playChild() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {
	case <-term:
		return 0
	case <-time.After(time.Minute):
		return 4
	}
}

// The real seam: children forked by the spawner, told apart by the
// kernel's credentials on their READY=1, reaped on SIGCHLD, stopped by
// SIGTERM; a crash is restarted.
func TestRealProcesses(t *testing.T) {
	t.Setenv(testRole, "child")
	cfg := testConfig(t, 2)
	cfg.Command = []string{os.Args[0]}
	s, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Stop(StopFast)
		<-done
	})
	ready := waitReady(t, s, 2, nil)
	if err := syscall.Kill(ready[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := waitReady(t, s, 2, ready[:1])
	if again[1] != ready[1] {
		t.Errorf("pids %v after killing %d, want a new slot 0 only", again, ready[0])
	}
	s.Stop(StopGraceful)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the graceful stop did not end")
	}
	for _, pid := range again {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("child %d outlived the stop", pid)
		}
	}
}

// waitReady polls Status until n children are ready, none of them one of
// gone, and returns their pids by slot.
func waitReady(t *testing.T, s *Supervisor, n int, gone []int) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := s.Status()
		if err != nil {
			t.Fatal(err)
		}
		var pids []int
		for _, c := range st.Children {
			if c.State == StateReady && !slices.Contains(gone, c.PID) {
				pids = append(pids, c.PID)
			}
		}
		if len(pids) == n && len(st.Children) == n {
			return pids
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d children not ready within 30 s", n)
	return nil
}
