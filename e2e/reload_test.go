package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// ctl runs a client command of bin/master against m's control socket and
// returns its exit code, stdout and stderr.
func (m *master) ctl(args ...string) (int, string, string) {
	m.t.Helper()
	full := append([]string{args[0], "--control", m.control}, args[1:]...)
	return runMaster(m.t, full...)
}

func runMaster(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "master"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("master %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// status returns the master's GET /status.
type statusReply struct {
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
	Workers    int    `json:"workers"`
	Sockets    string `json:"sockets"`
	Ready      string `json:"ready"`
	Version    string `json:"version"`
	Upgrades   int    `json:"upgrades"`
	Children   []struct {
		Slot       int     `json:"slot"`
		Generation int     `json:"generation"`
		PID        int     `json:"pid"`
		State      string  `json:"state"`
		Accepts    uint64  `json:"accepts"`
		Restarts   int     `json:"restarts"`
		Uptime     float64 `json:"uptime_seconds"`
		LastExit   string  `json:"last_exit"`
		RetryIn    float64 `json:"retry_in_seconds"`
		Note       string  `json:"note"`
	} `json:"children"`
}

func (m *master) status() statusReply {
	m.t.Helper()
	code, out, errOut := m.ctl("status", "--json")
	if code != 0 {
		m.t.Fatalf("master status: exit %d: %s", code, errOut)
	}
	var st statusReply
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		m.t.Fatalf("master status --json: %v: %q", err, out)
	}
	return st
}

// settled reports whether every child is ready and of generation gen.
func (st statusReply) settled(gen, workers int) bool {
	if st.Generation != gen || len(st.Children) != workers {
		return false
	}
	for _, c := range st.Children {
		if c.Generation != gen || c.State != "ready" {
			return false
		}
	}
	return true
}

// pidsBySlot returns the pids of the ready children, by slot.
func (st statusReply) pidsBySlot() map[int]int {
	pids := map[int]int{}
	for _, c := range st.Children {
		if c.State == "ready" {
			pids[c.Slot] = c.PID
		}
	}
	return pids
}

func writeConfig(t *testing.T, path, yaml string) {
	t.Helper()
	write(t, path, yaml, 0o644)
}

func childConfig(workers int, extra string) string {
	return fmt.Sprintf("workers: %d\ncommand: [%s]\n%s", workers, filepath.Join(bin, "child"), extra)
}

// reloadUnderLoad runs 20 reloads with `master reload` under continuous
// load, keep-alive and one request per connection at once, and returns the
// two load results.
func reloadUnderLoad(t *testing.T, sockets string, reloads int, extra ...string) (keep, perConn *loadResult) {
	const n = 4
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	writeConfig(t, cfg, childConfig(n, ""))
	args := append([]string{"--config", cfg, "--sockets", sockets, "--drain-timeout", "10s"}, extra...)
	if sockets == "master" {
		// Reloads must lose nothing with steering on, as it is by
		// default in master mode where the program loads.
		args = append(args, "--steer", "on")
	}
	m := startMaster(t, args...)
	m.waitReady(n)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	results := runBothLoads(ctx, m.addr)
	for i := range reloads {
		waitServed(t, m, 50)
		code, out, errOut := m.ctl("reload")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", i+2)) {
			t.Fatalf("reload %d: exit %d, stdout %q, stderr %q", i+1, code, out, errOut)
		}
	}
	waitServed(t, m, 50)
	gen := reloads + 1
	eventually(t, 30*time.Second, fmt.Sprintf("every child of generation %d, none older", gen), func() bool {
		return m.status().settled(gen, n)
	})
	cancel()
	for range 2 {
		r := <-results
		if r.mode == keepAlive {
			keep = r
		} else {
			perConn = r
		}
	}
	// Every child of an old generation is gone, not only out of the table.
	current := m.status().pidsBySlot()
	for _, pid := range m.startedPIDs() {
		isCurrent := false
		for _, p := range current {
			isCurrent = isCurrent || p == pid
		}
		if !isCurrent && testkit.Alive(pid) {
			t.Errorf("child %d of an old generation is still running", pid)
		}
	}
	return keep, perConn
}

func assertNoFailures(t *testing.T, what string, results ...*loadResult) {
	t.Helper()
	assertNoFailuresMin(t, what, 1000, results...)
}

// assertNoFailuresMin checks that no request failed and that at least min
// were served, so that the load did run.
func assertNoFailuresMin(t *testing.T, what string, min int, results ...*loadResult) {
	t.Helper()
	for _, r := range results {
		t.Logf("%s, %v: %v", what, r.mode, r)
		if r.failed() != 0 {
			t.Errorf("%s, %v: %d failed requests: %v", what, r.mode, r.failed(), r)
		}
		if r.ok < min {
			t.Errorf("%s, %v: only %d requests served; the load did not run", what, r.mode, r.ok)
		}
	}
}

// Child socket mode with tcp_migrate_req=1: 20 reloads under load lose
// nothing.
func TestReloadUnderLoadChildMode(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	keep, perConn := reloadUnderLoad(t, "child", 20)
	assertNoFailures(t, "20 reloads, --sockets child, tcp_migrate_req=1", keep, perConn)
}

// Child socket mode with steering needs no sysctl either: the steering
// program, attached through the master's copies of the children's
// listeners, moves the queue of each closing listener. 20 reloads under
// load with tcp_migrate_req=0 lose nothing.
func TestReloadUnderLoadChildModeSteered(t *testing.T) {
	if !inNetns(t, 0) {
		return
	}
	keep, perConn := reloadUnderLoad(t, "child", 20, "--steer", "on")
	assertNoFailures(t, "20 reloads, --sockets child --steer on, tcp_migrate_req=0", keep, perConn)
}

// Master socket mode needs no sysctl: 20 reloads under load with
// tcp_migrate_req=0 lose nothing, with steering on.
func TestReloadUnderLoadMasterMode(t *testing.T) {
	if !inNetns(t, 0) {
		return
	}
	keep, perConn := reloadUnderLoad(t, "master", 20)
	assertNoFailures(t, "20 reloads, --sockets master --steer on, tcp_migrate_req=0", keep, perConn)
}

// A new generation that fails, by exiting or by never getting ready, is
// rolled back under load: `master reload` exits 1 with the reason, the old
// generation's pids are unchanged, and no request fails.
func TestReloadRollsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command string
		reason  string
	}{
		{name: "exits 1", command: "[/bin/sh, -c, 'exit 1']", reason: "exited with code 1"},
		{name: "never ready", command: "[/bin/sleep, '60']", reason: "not ready within 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 2
			cfg := filepath.Join(t.TempDir(), "prefork.yaml")
			writeConfig(t, cfg, childConfig(n, ""))
			m := startMaster(t, "--config", cfg, "--ready-timeout", "1s")
			m.waitReady(n)
			before := m.status()

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			results := make(chan *loadResult, 2)
			for _, mode := range []loadMode{keepAlive, perRequest} {
				go func() {
					r := runLoad(ctx, m.addr, mode, 8, 1_000_000)
					r.mode = mode
					results <- r
				}()
			}
			waitServed(t, m, 50)
			writeConfig(t, cfg, fmt.Sprintf("workers: %d\ncommand: %s\n", n, tt.command))
			code, _, errOut := m.ctl("reload")
			if code != 1 || !strings.Contains(errOut, "rolled back") || !strings.Contains(errOut, tt.reason) {
				t.Errorf("reload of a failing generation: exit %d, stderr %q; want 1 and %q", code, errOut, tt.reason)
			}
			waitServed(t, m, 50)
			cancel()
			assertNoFailuresMin(t, "rollback", 100, <-results, <-results)
			after := m.status()
			if after.Generation != 1 || fmt.Sprint(after.pidsBySlot()) != fmt.Sprint(before.pidsBySlot()) {
				t.Errorf("after the rollback: generation %d, pids %v; want 1 and %v unchanged",
					after.Generation, after.pidsBySlot(), before.pidsBySlot())
			}
		})
	}
}

// A config that does not parse or validate is rejected and changes nothing.
func TestReloadRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	writeConfig(t, cfg, childConfig(2, ""))
	m := startMaster(t, "--config", cfg)
	m.waitReady(2)
	before := m.status()
	for _, bad := range []string{"workers: [\n", "wrokers: 2\n", "workers: 0\n", "command: [/nonexistent]\n"} {
		writeConfig(t, cfg, bad)
		code, _, errOut := m.ctl("reload")
		if code != 1 || !strings.Contains(errOut, "rejected") {
			t.Errorf("reload with %q: exit %d, stderr %q; want 1 and rejected", bad, code, errOut)
		}
	}
	after := m.status()
	if after.Generation != 1 || fmt.Sprint(after.pidsBySlot()) != fmt.Sprint(before.pidsBySlot()) {
		t.Errorf("after rejected reloads: generation %d, pids %v; want 1 and %v", after.Generation, after.pidsBySlot(), before.pidsBySlot())
	}
	if _, err := getWhoami(m.addr); err != nil {
		t.Errorf("service after rejected reloads: %v", err)
	}
}

// The drain of the old generation: a request shorter than the drain
// timeout completes with 200 across a reload; a longer one is cut when the
// drain timeout ends.
func TestReloadDrainTimeout(t *testing.T) {
	m := startMaster(t, "--workers", "2", "--drain-timeout", "2s")
	m.waitReady(2)
	short := sendSlow(t, m.addr, "1s")
	long := sendSlow(t, m.addr, "30s")
	start := time.Now()
	if code, _, errOut := m.ctl("reload"); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut)
	}
	if code, err := short(); err != nil || code != 200 {
		t.Errorf("a 1 s request across the reload: code %d, err %v; want 200", code, err)
	}
	code, err := long()
	took := time.Since(start)
	if err == nil {
		t.Errorf("a 30 s request with a 2 s drain timeout got an answer (%d) after %v", code, took)
	}
	if took > 10*time.Second {
		t.Errorf("the 30 s request was cut after %v, want about 2 s", took)
	}
}

// The control socket: mode 0600, `master status` as a table and as JSON,
// `master stop`, a second master on the same socket refused, a stale
// socket file replaced, and a missing master reported in one line.
func TestControlSocket(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "--workers", "2")
	m.waitReady(2)
	fi, err := os.Stat(m.control)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("control socket mode %o, want 600", perm)
	}
	code, out, _ := m.ctl("status")
	var readyRows int
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[3] == "ready" {
			readyRows++
		}
	}
	if code != 0 || !strings.Contains(out, "SLOT") || !strings.Contains(out, "ready notify") || readyRows != 2 {
		t.Errorf("master status: exit %d:\n%s", code, out)
	}
	st := m.status()
	if st.PID != m.cmd.Process.Pid || st.Workers != 2 || st.Sockets != "child" || len(st.Children) != 2 {
		t.Errorf("status %+v", st)
	}

	// A second master on the same socket is bad input.
	code, _, errOut := runMaster(t, "run", "--listen", testkit.FreeAddr(t), "--control", m.control, "--workers", "1")
	if code != 2 || !strings.Contains(errOut, "in use by a running master") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("second master on %s: exit %d, stderr %q; want 2 and one line", m.control, code, errOut)
	}

	if code, _, errOut := m.ctl("stop"); code != 0 {
		t.Fatalf("master stop: exit %d: %s", code, errOut)
	}
	if code := m.wait(15 * time.Second); code != 0 {
		t.Fatalf("master exit code %d after master stop, want 0", code)
	}
	code, _, errOut = m.ctl("status")
	if code != 1 || !strings.Contains(errOut, "no master is running") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("status without a master: exit %d, stderr %q; want 1 and one line", code, errOut)
	}

	// A stale socket file, left by a master that was killed, is replaced.
	killed := startMaster(t, "--workers", "1")
	killed.waitReady(1)
	killed.signal(syscall.SIGKILL)
	killed.wait(5 * time.Second)
	if _, err := os.Stat(killed.control); err != nil {
		t.Fatalf("the killed master left no socket file to test with: %v", err)
	}
	again := startMasterOn(t, testkit.FreeAddr(t), nil, "--workers", "1", "--control", killed.control)
	again.control = killed.control
	again.waitReady(1)
	if st := again.status(); st.PID != again.cmd.Process.Pid {
		t.Errorf("status after replacing a stale socket answers for pid %d, want %d", st.PID, again.cmd.Process.Pid)
	}
}

// A reload may change the worker count and the address: the new
// generation binds the new address, the old one drains from the old
// address, which is then free.
func TestReloadChangesAddressAndWorkers(t *testing.T) {
	t.Parallel()
	for _, sockets := range []string{"child", "master"} {
		t.Run(sockets, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "prefork.yaml")
			oldAddr, newAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
			extra := "sockets: " + sockets + "\nlisten: "
			writeConfig(t, cfg, childConfig(2, extra+oldAddr+"\n"))
			m := startMasterOn(t, "", nil, "--config", cfg) // no --listen: it would win over the file
			m.addr = oldAddr
			m.waitReady(2)
			writeConfig(t, cfg, childConfig(3, extra+newAddr+"\n"))
			if code, out, errOut := m.ctl("reload"); code != 0 || !strings.Contains(out, "generation 2 serves") {
				t.Fatalf("reload: exit %d %q %q", code, out, errOut)
			}
			eventually(t, 20*time.Second, "three children of generation 2", func() bool { return m.status().settled(2, 3) })
			seen := map[int]bool{}
			for range 300 {
				w, err := getWhoami(newAddr)
				if err != nil {
					t.Fatal(err)
				}
				if w.Generation != 2 {
					t.Fatalf("answer from generation %d on the new address", w.Generation)
				}
				seen[w.Slot] = true
			}
			if len(seen) != 3 {
				t.Errorf("slots answering on the new address: %v, want 3", seen)
			}
			eventually(t, 10*time.Second, "the old address free once the old generation drained", func() bool {
				return portFree(oldAddr)
			})
		})
	}
}
