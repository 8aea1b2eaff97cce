package e2e

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// SIGTERM to the master with a request in flight: the request gets its 200,
// the master exits 0, no child is left and the port is free.
func TestGracefulStopFinishesInFlight(t *testing.T) {
	t.Parallel()
	testGracefulStop(t, func(m *master) { m.signal(syscall.SIGTERM) })
}

// A terminal's Ctrl-C sends SIGINT to the whole foreground process group:
// the children must not act on it; the master drains them as for SIGTERM.
func TestCtrlCDrainsLikeSIGTERM(t *testing.T) {
	t.Parallel()
	testGracefulStop(t, func(m *master) {
		if err := syscall.Kill(-m.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	})
}

func testGracefulStop(t *testing.T, stop func(*master)) {
	m := startMaster(t, "--workers", "2", "--drain-timeout", "10s")
	m.waitReady(2)
	inFlight := sendSlow(t, m.addr, "2s")
	stop(m)
	if code, err := inFlight(); err != nil || code != 200 {
		t.Fatalf("in-flight request across the stop: code %d, err %v; want 200", code, err)
	}
	if code := m.wait(15 * time.Second); code != 0 {
		t.Fatalf("master exit code %d, want 0", code)
	}
	for _, pid := range m.startedPIDs() {
		if testkit.Alive(pid) {
			t.Errorf("child %d outlived the master", pid)
		}
	}
	if !portFree(m.addr) {
		t.Errorf("%s still has a listener after the master exited", m.addr)
	}
}

// SIGQUIT: every child is killed at once, the master exits 0.
func TestFastStop(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "2", "--drain-timeout", "1m")
	m.waitReady(2)
	sendSlow(t, m.addr, "30s") // would hold a graceful stop for 30 s
	m.signal(syscall.SIGQUIT)
	if code := m.wait(10 * time.Second); code != 0 {
		t.Fatalf("master exit code %d, want 0", code)
	}
	for _, l := range m.lines("child exited") {
		if l.str("signal") != "SIGKILL" {
			t.Errorf("child %d exited with %v, want SIGKILL", l.int("pid"), l)
		}
	}
	for _, pid := range m.startedPIDs() {
		if testkit.Alive(pid) {
			t.Errorf("child %d outlived the master", pid)
		}
	}
}

// SIGKILL to the master: every child notices, drains and exits within the
// drain timeout plus one second, and the port is free.
func TestMasterKilledChildrenExit(t *testing.T) {
	const drain = 2 * time.Second
	m := startMaster(t, "--workers", "3", "--drain-timeout", drain.String())
	m.waitReady(3)
	pids := m.startedPIDs()
	m.signal(syscall.SIGKILL)
	m.wait(5 * time.Second)
	killed := time.Now()
	eventually(t, drain+time.Second, "every child gone after the master was killed", func() bool {
		for _, pid := range pids {
			if testkit.Alive(pid) {
				return false
			}
		}
		return true
	})
	t.Logf("children gone %v after the master's death", time.Since(killed).Round(time.Millisecond))
	if !portFree(m.addr) {
		t.Errorf("%s still has a listener", m.addr)
	}
}

// SIGTTIN and SIGTTOU add and remove a worker (their default action would
// stop the master), and SIGPIPE (a closed log reader) is ignored.
func TestJobControlSignalsScale(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "1")
	m.waitReady(1)
	m.signal(syscall.SIGTTIN)
	m.waitLog(10*time.Second, 1, "scaled to 2", func(l logLine) bool { return l.msg() == "scaled" && l.int("to") == 2 })
	m.waitReady(2)
	m.signal(syscall.SIGTTOU)
	m.waitLog(10*time.Second, 1, "scaled to 1", func(l logLine) bool { return l.msg() == "scaled" && l.int("to") == 1 })
	m.signal(syscall.SIGTTOU) // below 1: refused, logged
	m.waitLog(10*time.Second, 1, "scale to 0 refused", func(l logLine) bool { return l.msg() == "scale refused" })
	m.signal(syscall.SIGPIPE)
	if testkit.Stopped(m.cmd.Process.Pid) {
		t.Fatal("the master is stopped (state T)")
	}
	eventually(t, 10*time.Second, "one ready child in slot 0", func() bool {
		st := m.status()
		return st.Workers == 1 && st.settled(1, 1) && st.Children[0].Slot == 0
	})
}

// SIGKILL reaches a child's whole process group: a helper it started in the
// background does not outlive a fast stop.
func TestFastStopKillsChildProcessGroup(t *testing.T) {
	t.Parallel()
	script := "sleep 300 & exec " + filepath.Join(bin, "child")
	m := startMaster(t, "--workers", "1", "--", "/bin/sh", "-c", script)
	ready := m.waitReady(1)
	var helper int
	eventually(t, 5*time.Second, "the child's background sleep", func() bool {
		for _, pid := range testkit.ChildrenOf(ready[0]) {
			if comm(pid) == "sleep" {
				helper = pid
				return true
			}
		}
		return false
	})
	t.Cleanup(func() {
		if testkit.Alive(helper) {
			syscall.Kill(helper, syscall.SIGKILL)
		}
	})
	m.signal(syscall.SIGQUIT)
	if code := m.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	eventually(t, 5*time.Second, "the helper killed with its child's group", func() bool { return !testkit.Alive(helper) })
}

// A graceful stop that had to kill a child at the drain timeout exits 3,
// not 0: a container runtime or systemd shows that work was cut.
func TestStopExitCodeSaysDrainWasCut(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "1", "--drain-timeout", "1s")
	m.waitReady(1)
	inFlight := sendSlow(t, m.addr, "30s")
	m.signal(syscall.SIGTERM)
	if code := m.wait(15 * time.Second); code != 3 {
		t.Fatalf("master exit code %d, want 3 (drain cut)", code)
	}
	if _, err := inFlight(); err == nil {
		t.Error("the 30 s request was answered; the drain timeout did not cut it")
	}
	if l := m.lines("master stopped"); len(l) != 1 || l[0].int("exit_code") != 3 {
		t.Errorf("master stopped lines %v, want one with exit_code 3", l)
	}
}
