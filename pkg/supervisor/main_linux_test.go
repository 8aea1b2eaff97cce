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

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prefork/prefork/pkg/steer"
)

// testRole, in the environment, makes the test binary play a child.
const testRole = "SUPERVISOR_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(testRole) {
	case "":
		os.Exit(m.Run())
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

// In master socket mode the master binds one socket per slot and passes
// it as fd 3 by socket activation; with steering, a slot whose child hangs
// is steered away from, and the sockets close when the master stops.
func TestMasterSocketsSteered(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	cfg.Steer = SteerOn
	cfg.Watchdog = time.Second
	h := newHarnessSteering(t, cfg)
	p0, p1 := h.child(0, 1), h.child(1, 1)
	for _, p := range []*fakeProc{p0, p1} {
		if p.env["LISTEN_FDS"] != "1" || p.env["LISTEN_FDNAMES"] != "prefork" || p.env["PREFORK_COUNTERS_FD"] != "4" ||
			len(p.spec.extra) != 2 || p.spec.argv[1] != ShimCommand {
			t.Fatalf("child of slot %d: env %v, extra %v, argv %q", p.slot(), p.env, p.spec.extra, p.spec.argv)
		}
	}
	if p0.spec.extra[0] == p1.spec.extra[0] {
		t.Errorf("both slots got socket %d", p0.spec.extra[0])
	}
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	snap, _ := h.s.Snapshot()
	if snap.Slots[0].ListenInode == 0 || snap.Slots[0].SteeredAway || snap.Slots[1].SteeredAway {
		t.Fatalf("slots after a healthy tick: %+v", snap.Slots)
	}
	p1.ignore[syscall.SIGQUIT] = true
	h.notify(p1, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.clock.Advance(steerInterval)
	snap, _ = h.s.Snapshot()
	if !snap.Slots[1].SteeredAway || snap.Slots[1].SteerChanges != 1 || snap.Slots[0].SteeredAway {
		t.Errorf("slot 1 hung: %+v", snap.Slots)
	}
	// Its replacement takes the slot's socket, and steering comes back.
	h.clock.Advance(WatchdogGrace)
	h.ready(h.child(1, 1))
	if got := h.child(1, 1).spec.extra[0]; got != p1.spec.extra[0] && h.logs.count("socket of the slot renewed") == 0 {
		t.Errorf("the replacement got socket %d, the slot's is %d", got, p1.spec.extra[0])
	}
	h.clock.Advance(steerInterval)
	snap, _ = h.s.Snapshot()
	if snap.Slots[1].SteeredAway {
		t.Errorf("slot 1 still steered away after its replacement was ready")
	}
	if n := h.logs.count("slot takes new connections again"); n != 1 {
		t.Errorf("%d lines of slot 1 coming back, want 1", n)
	}
	if r := h.s.Scale(3); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := h.s.Scale(1); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.s.Stop(StopGraceful)
	h.wait()
	if got := len(h.s.sockets.m); got != 0 {
		t.Errorf("%d sockets held after the stop", got)
	}
}

// newHarnessSteering is newHarness where the steering program loads.
func newHarnessSteering(t *testing.T, cfg Config) *harness {
	return newHarness(t, cfg, func(e *env, _ *Options) { e.steerSupported = steer.Supported })
}
