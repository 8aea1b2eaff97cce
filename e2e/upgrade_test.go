package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
)

// Upgrades of the master in place (issue 14): `master upgrade` execs a
// new binary in the master's process, which takes over every child,
// socket and count.

var (
	nextOnce sync.Once
	nextBin  map[string]string
	nextErr  error
)

// upgradeBinaries builds, once, the masters the upgrade tests switch to:
// "next", of another version; "oldstate", which reads only an older
// format of the state; and writes "exits1", a program that fails,
// "script", a shell script that runs the master, and "noexec", a master
// without its execute bit.
func upgradeBinaries(t *testing.T) map[string]string {
	t.Helper()
	nextOnce.Do(func() {
		dir, err := os.MkdirTemp("", "prefork-upgrade-")
		if err != nil {
			nextErr = err
			return
		}
		nextBin = map[string]string{}
		for name, ldflags := range map[string]string{
			"next":     "-X=github.com/prefork/prefork/pkg/version.Version=v99.0.0-next",
			"oldstate": "-X=github.com/prefork/prefork/pkg/supervisor.upgradeFormatText=0",
		} {
			out := filepath.Join(dir, name)
			build := exec.Command("go", "build", "-ldflags="+ldflags, "-o", out, "github.com/prefork/prefork/cmd/master")
			if msg, err := build.CombinedOutput(); err != nil {
				nextErr = fmt.Errorf("build %s: %v: %s", name, err, msg)
				return
			}
			nextBin[name] = out
		}
		nextBin["script"] = filepath.Join(dir, "script")
		if err := os.WriteFile(nextBin["script"], []byte("#!/bin/sh\nexec "+filepath.Join(bin, "master")+" \"$@\"\n"), 0o755); err != nil {
			nextErr = err
			return
		}
		// An executable that exits 1: a copy of false(1), the test's own.
		falseData, err := os.ReadFile("/bin/false")
		if err == nil {
			nextBin["exits1"] = filepath.Join(dir, "exits1")
			err = os.WriteFile(nextBin["exits1"], falseData, 0o755)
		}
		if err != nil {
			nextErr = err
			return
		}
		data, err := os.ReadFile(nextBin["next"])
		if err == nil {
			nextBin["noexec"] = filepath.Join(dir, "noexec")
			err = os.WriteFile(nextBin["noexec"], data, 0o644)
		}
		nextErr = err
	})
	if nextErr != nil {
		t.Fatal(nextErr)
	}
	return nextBin
}

// upgradeUnderLoad runs upgrades in place, alternating between the
// binary under test and "next", under keep-alive and new-connection load,
// and checks after each that the children and their counts went on.
func upgradeUnderLoad(t *testing.T, sockets string, upgrades int) {
	bins := upgradeBinaries(t)
	const n = 4
	m := startMaster(t, "--workers", strconv.Itoa(n), "--sockets", sockets, "--drain-timeout", "10s")
	m.waitReady(n)
	waitServed(t, m, 20)
	before := m.status()
	pids := before.pidsBySlot()
	figBefore := figuresOf(t, before.PID)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results := runBothLoads(ctx, m.addr)
	accepts := map[int]uint64{}
	var took []time.Duration
	for i := range upgrades {
		waitServed(t, m, 20)
		binary, want := filepath.Join(bin, "master"), before.Version
		if i%2 == 0 {
			binary, want = bins["next"], "v99.0.0-next"
		}
		start := time.Now()
		code, out, errOut := m.ctl("upgrade", "--binary", binary)
		took = append(took, time.Since(start))
		if code != 0 || !strings.Contains(out, "upgraded in place") {
			t.Fatalf("upgrade %d: exit %d, stdout %q, stderr %q", i+1, code, out, errOut)
		}
		st := m.status()
		if st.PID != before.PID || st.Version != want || st.Upgrades != i+1 {
			t.Fatalf("after upgrade %d: pid %d version %q upgrades %d, want pid %d version %q upgrades %d",
				i+1, st.PID, st.Version, st.Upgrades, before.PID, want, i+1)
		}
		if got := st.pidsBySlot(); fmt.Sprint(got) != fmt.Sprint(pids) {
			t.Fatalf("after upgrade %d: children %v, want the same %v", i+1, got, pids)
		}
		for _, c := range st.Children {
			if c.Accepts < accepts[c.Slot] {
				t.Errorf("after upgrade %d: slot %d accepts went down from %d to %d", i+1, c.Slot, accepts[c.Slot], c.Accepts)
			}
			accepts[c.Slot] = c.Accepts
		}
	}
	waitServed(t, m, 20)
	cancel()
	for range 2 {
		assertNoFailures(t, fmt.Sprintf("%d upgrades, --sockets %s", upgrades, sockets), <-results)
	}
	figAfter := figuresOf(t, before.PID)
	t.Logf("%d upgrades, --sockets %s: master before %+v, after %+v; `master upgrade` took %v (first) to %v (last)",
		upgrades, sockets, figBefore, figAfter, took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	for _, l := range m.lines("master upgraded in place") {
		t.Logf("exec to the new master's loop: %d ms", l.int("exec_to_loop_ms"))
		break
	}
	if figAfter.fds > figBefore.fds+2 {
		t.Errorf("the master's descriptors grew from %d to %d over %d upgrades", figBefore.fds, figAfter.fds, upgrades)
	}
	// A reload after the upgrades works as before.
	code, out, errOut := m.ctl("reload")
	if code != 0 || !strings.Contains(out, "generation 2 serves") {
		t.Fatalf("reload after the upgrades: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// upgradesInCI is how many upgrades the load tests run; PREFORK_UPGRADES
// raises it (the figure is for 100).
func upgradesInCI() int {
	if n, err := strconv.Atoi(os.Getenv("PREFORK_UPGRADES")); err == nil && n > 0 {
		return n
	}
	return 10
}

func TestUpgradeUnderLoadChildMode(t *testing.T) {
	t.Parallel()
	upgradeUnderLoad(t, "child", upgradesInCI())
}

func TestUpgradeUnderLoadMasterMode(t *testing.T) {
	t.Parallel()
	upgradeUnderLoad(t, "master", upgradesInCI())
}

// A binary that cannot take over is rejected before the exec: the master
// runs on as it was, and nothing it serves fails.
func TestUpgradeRejectsBrokenBinary(t *testing.T) {
	t.Parallel()
	bins := upgradeBinaries(t)
	m := startMaster(t, "--workers", "2", "--sockets", "master")
	m.waitReady(2)
	before := m.status()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	load := make(chan *loadResult, 1)
	go func() { load <- runLoad(ctx, m.addr, perRequest, 4, 5_000_000) }()
	for _, c := range []struct{ name, want string }{
		{"exits1", "exited with code 1"},
		{"script", "not an ELF executable"},
		{"noexec", "permission denied"},
		{"oldstate", fmt.Sprintf("state format %d", supervisor.UpgradeFormat())},
		{"missing", "no such file"},
	} {
		binary := bins[c.name]
		if binary == "" {
			binary = filepath.Join(t.TempDir(), "master-missing")
		}
		code, out, errOut := m.ctl("upgrade", "--binary", binary)
		if code != 1 || !strings.Contains(errOut, "upgrade rejected") || !strings.Contains(errOut, c.want) {
			t.Errorf("upgrade to %s: exit %d, stdout %q, stderr %q; want exit 1, rejected: %s", c.name, code, out, errOut, c.want)
		}
		waitServed(t, m, 20)
		st := m.status()
		if st.PID != before.PID || st.Upgrades != 0 || fmt.Sprint(st.pidsBySlot()) != fmt.Sprint(before.pidsBySlot()) {
			t.Errorf("after the rejected %s: %+v, want as before: %+v", c.name, st, before)
		}
	}
	cancel()
	assertNoFailuresMin(t, "rejected upgrades", 100, <-load)
}

// SIGUSR2 upgrades to the master's own path, as nginx's USR2 does. The
// children's output pipes (--child-output prefix) are handed on: what
// they write after the upgrade still comes out, prefixed.
func TestUpgradeOnSIGUSR2(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "2", "--child-output", "prefix")
	m.waitReady(2)
	before := m.status()
	m.signal(syscall.SIGUSR2)
	m.waitMsg(30*time.Second, 1, "master upgraded in place")
	st := m.status()
	if st.PID != before.PID || st.Upgrades != 1 || fmt.Sprint(st.pidsBySlot()) != fmt.Sprint(before.pidsBySlot()) {
		t.Errorf("after SIGUSR2: %+v, want the same master and children as %+v, upgrades 1", st, before)
	}
	waitServed(t, m, 10)
	// The children drain on a reload and say so on their stderr.
	if code, out, errOut := m.ctl("reload"); code != 0 {
		t.Fatalf("reload: exit %d %q %q", code, out, errOut)
	}
	for slot, pid := range before.pidsBySlot() {
		prefix := fmt.Sprintf("[slot %d pid %d]", slot, pid)
		eventually(t, 30*time.Second, prefix+" child drained", func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, line := range strings.Split(m.raw.String(), "\n") {
				if strings.HasPrefix(line, prefix) && strings.Contains(line, "child drained") {
					return true
				}
			}
			return false
		})
	}
	for _, l := range m.lines("child exited") {
		if strings.Contains(l.str("signal"), "PIPE") {
			t.Errorf("a child died of SIGPIPE: %v", l)
		}
	}
}
