package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// A child that pings its watchdog and then hangs (slot 1: the reference
// child's simulated deadlock) is sent SIGQUIT, prints its goroutines, is
// replaced and counted; a child that keeps pinging (slot 0) keeps running.
func TestWatchdogKillsHungChild(t *testing.T) {
	// A period long enough that a -race master on a busy machine never
	// misses a healthy child's pings.
	script := `if [ "$PREFORK_SLOT" = 1 ]; then export CHILD_HANG_AFTER=1s; fi; exec ` + filepath.Join(bin, "child")
	metricsAddr := testkit.FreeAddr(t)
	m := startMaster(t, "--workers", "2", "--watchdog", "2s", "--metrics", metricsAddr,
		"--", "/bin/sh", "-c", script)
	ready := m.waitReady(2)
	kill := m.waitMsg(20*time.Second, 1, "child missed its watchdog; sending SIGQUIT, then SIGKILL")[0]
	if kill.int("slot") != 1 || kill.int("pid") != ready[1] {
		t.Fatalf("watchdog killed slot %d pid %d, want slot 1 pid %d", kill.int("slot"), kill.int("pid"), ready[1])
	}
	exit := m.waitLog(10*time.Second, 1, "the hung child's exit, as a watchdog kill", func(l logLine) bool {
		return l.msg() == "child exited unexpectedly" && l.int("pid") == ready[1]
	})[0]
	if exit.str("reason") != "watchdog" || exit.int("code") != 2 {
		// A Go program exits 2 after printing its goroutines on SIGQUIT.
		t.Errorf("exit line %v: want reason watchdog and code 2", exit)
	}
	m.mu.Lock()
	dumped := strings.Contains(m.raw.String(), "SIGQUIT: quit") && strings.Contains(m.raw.String(), "goroutine ")
	m.mu.Unlock()
	if !dumped {
		t.Error("no goroutine dump from the SIGQUIT child on stderr")
	}
	// The slot gets a new child, which serves.
	m.waitLog(20*time.Second, 1, "a new ready child in slot 1", func(l logLine) bool {
		return l.msg() == "child ready" && l.int("slot") == 1 && l.int("pid") != ready[1]
	})
	text := scrape(t, metricsAddr)
	if !strings.Contains(text, `prefork_child_watchdog_kills_total{slot="0"} 0`) ||
		strings.Contains(text, `prefork_child_watchdog_kills_total{slot="1"} 0`) {
		t.Errorf("watchdog kills in the metrics:\n%s", grepLines(text, "watchdog"))
	}
	// Slot 0 pinged all along: never killed, same pid.
	for _, l := range m.lines("child missed its watchdog; sending SIGQUIT, then SIGKILL") {
		if l.int("slot") == 0 {
			t.Errorf("the healthy child of slot 0 was killed by the watchdog: %v", l)
		}
	}
	if !testkit.Alive(ready[0]) {
		t.Errorf("slot 0's child %d is gone", ready[0])
	}
}

// Children learn the watchdog period from WATCHDOG_USEC, as under systemd,
// and only when --watchdog is on: the master's own WATCHDOG_USEC (from
// systemd's WatchdogSec=) is never passed on.
func TestWatchdogEnvironment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args: nil, want: ""},
		{args: []string{"--watchdog", "1500ms"}, want: "1500000"},
	} {
		m := startMasterOn(t, testkit.FreeAddr(t), []string{"WATCHDOG_USEC=7000000"},
			append([]string{"--workers", "1"}, tc.args...)...)
		pid := m.waitReady(1)[0]
		if got := environ(t, pid)["WATCHDOG_USEC"]; got != tc.want {
			t.Errorf("%v: the child's WATCHDOG_USEC is %q, want %q", tc.args, got, tc.want)
		}
		m.signal(syscall.SIGQUIT)
		m.wait(10 * time.Second)
	}
}

// environ reads the environment a process of the test's was started with.
func environ(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for kv := range strings.SplitSeq(string(data), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func grepLines(text, substr string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
