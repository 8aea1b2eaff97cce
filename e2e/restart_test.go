package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// A command that exits at once is not bad input: the master keeps running,
// logs every exit with its status, restarts with a doubling delay, and
// still answers signals.
func TestCrashLoopBacksOff(t *testing.T) {
	m := startMaster(t, "--workers", "1", "--", "/bin/sh", "-c", "exit 3")
	// Restarts at 0, 100, 200, 400, 800 ms: five restarts in about 1.5 s.
	restarts := m.waitMsg(20*time.Second, 6, "restarting slot")
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond}
	for i, l := range restarts[:len(want)] {
		if got, ok := l["in_ms"].(float64); !ok || got != float64(want[i].Milliseconds()) {
			t.Errorf("restart %d: delay in_ms=%v, want %d", i+1, l["in_ms"], want[i].Milliseconds())
		}
	}
	exits := m.lines("child exited unexpectedly")
	for _, l := range exits {
		if l.int("code") != 3 {
			t.Errorf("exit logged as %v, want code 3", l)
		}
	}
	// Starts are at least the logged delay apart.
	starts := m.lines("child started")
	for i := 2; i < len(starts) && i < len(want); i++ {
		gap := logTime(t, starts[i]).Sub(logTime(t, starts[i-1]))
		if d := want[i-1]; gap < d {
			t.Errorf("start %d came %v after the one before, want at least %v", i, gap, d)
		}
	}
	m.signal(syscall.SIGTERM)
	if code := m.wait(10 * time.Second); code != 0 {
		t.Fatalf("master exit code %d after SIGTERM in a crash loop, want 0", code)
	}
}

func logTime(t *testing.T, l logLine) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, l.str("time"))
	if err != nil {
		t.Fatalf("log line without a time: %v", l)
	}
	return ts
}

// A child that never says READY=1 is killed after the ready timeout,
// counted as a failed start and replaced.
func TestNotReadyChildIsKilled(t *testing.T) {
	m := startMaster(t, "--workers", "1", "--ready-timeout", "300ms", "--", "/bin/sleep", "60")
	lines := m.waitMsg(10*time.Second, 1, "child not ready in time; killing it")
	pid := lines[0].int("pid")
	exit := m.waitLog(10*time.Second, 1, "the exit of the child that was not ready", func(l logLine) bool {
		return l.msg() == "child exited unexpectedly" && l.int("pid") == pid
	})[0]
	if exit.str("signal") != "SIGKILL" || exit.str("reason") != "not ready in time" {
		t.Errorf("exit line %v, want signal SIGKILL and reason", exit)
	}
	if testkit.Alive(pid) {
		t.Errorf("child %d still running", pid)
	}
	m.waitMsg(10*time.Second, 2, "child started") // replaced
}

// No descriptor of the master leaks into a child: it holds stdin, stdout,
// stderr and its counter page (fd 3, named by PREFORK_COUNTERS_FD) only.
func TestChildInheritsOnlyStdio(t *testing.T) {
	_, children := runFDList(t, 2)
	for slot, in := range children {
		if strings.Join(in.fds, ",") != "0,1,2,3" {
			t.Errorf("slot %d inherited descriptors:\n%s\nwant 0, 1, 2 and 3 only", slot, in.raw)
		}
		if !strings.HasPrefix(in.targets["3"], "/memfd:") || !strings.HasSuffix(in.activation, "PREFORK_COUNTERS_FD=3") {
			t.Errorf("slot %d: fd 3 is %s (%s), want the counter page named by PREFORK_COUNTERS_FD=3", slot, in.targets["3"], in.activation)
		}
		if in.targets["0"] != "/dev/null" {
			t.Errorf("slot %d: stdin is %s, want /dev/null", slot, in.targets["0"])
		}
	}
}
