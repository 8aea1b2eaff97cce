package e2e

import (
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

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// anyThreadHasAmbient reports whether a thread of pid holds ambient
// capabilities.
func anyThreadHasAmbient(t *testing.T, pid int) bool {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err == nil && strings.Contains(string(data), "CapAmb:\t") && !strings.Contains(string(data), "CapAmb:\t0000000000000000") {
			return true
		}
	}
	return false
}

// --user nobody: the children run as nobody, in both socket modes, and
// serve; the master stays root.
func TestChildrenRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the master switches the children's user")
	}
	for _, mode := range []string{"child", "master"} {
		t.Run(mode, func(t *testing.T) {
			m := startMaster(t, "--workers", "2", "--sockets", mode, "--user", "nobody")
			ready := m.waitReady(2)
			for slot, pid := range ready {
				st := procStatus(t, pid)
				if uids := strings.Fields(st["Uid"]); len(uids) != 4 || uids[0] != "65534" || uids[1] != "65534" {
					t.Errorf("slot %d pid %d: Uid %q, want nobody (65534)", slot, pid, st["Uid"])
				}
				if st["Groups"] != "" && !strings.HasPrefix(st["Groups"], "65534") {
					// nobody belongs to no group but its own.
					t.Errorf("slot %d pid %d: supplementary groups %q", slot, pid, st["Groups"])
				}
				for _, set := range []string{"CapEff", "CapPrm", "CapInh", "CapAmb"} {
					if st[set] != "0000000000000000" {
						t.Errorf("slot %d pid %d: %s %s, want none", slot, pid, set, st[set])
					}
				}
				env := environ(t, pid)
				if env["USER"] != "nobody" || env["HOME"] == os.Getenv("HOME") {
					t.Errorf("slot %d pid %d: USER=%q HOME=%q, want nobody's", slot, pid, env["USER"], env["HOME"])
				}
			}
			if uids := strings.Fields(procStatus(t, m.cmd.Process.Pid)["Uid"]); uids[0] != "0" {
				t.Errorf("master Uid %v, want root", uids)
			}
			for range 20 {
				if _, err := getWhoami(m.addr); err != nil {
					t.Fatalf("request to children running as nobody: %v", err)
				}
			}
			m.signal(syscall.SIGTERM)
			if code := m.wait(15 * time.Second); code != 0 {
				t.Errorf("master exit %d, want 0", code)
			}
		})
	}
}

// In child socket mode an unprivileged child binds a port below 1024 with
// the ambient CAP_NET_BIND_SERVICE, and with no other capability. In a
// network namespace of the test's own: port 80 is not the machine's.
func TestUserBindsLowPortWithAmbientCap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the master switches the children's user")
	}
	if !inNetns(t, 1) {
		return
	}
	addr := "127.0.0.1:80"
	if !portFree(addr) {
		t.Fatalf("%s is taken in a fresh network namespace", addr)
	}
	m := startMasterOn(t, addr, nil, "--workers", "2", "--user", "nobody")
	ready := m.waitReady(2)
	for slot, pid := range ready {
		st := procStatus(t, pid)
		const netBindService = "0000000000000400" // bit 10
		if st["CapEff"] != netBindService || st["CapAmb"] != netBindService {
			t.Errorf("slot %d: CapEff %s CapAmb %s, want only CAP_NET_BIND_SERVICE (%s)", slot,
				st["CapEff"], st["CapAmb"], netBindService)
		}
		if uids := strings.Fields(st["Uid"]); uids[0] != "65534" {
			t.Errorf("slot %d: Uid %v, want nobody", slot, uids)
		}
	}
	w, err := getWhoami(addr)
	if err != nil {
		t.Fatalf("request on port 80: %v", err)
	}
	if _, ok := ready[w.Slot]; !ok || w.PID != ready[w.Slot] {
		t.Errorf("answered by %+v, not one of %v", w, ready)
	}
}

// A master that is not root but holds the right to switch as ambient
// capabilities (systemd's User= with AmbientCapabilities=) passes none of
// them to children of another user: those could switch back to root.
func TestUserDropsMasterAmbientCaps(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the master ambient capabilities")
	}
	const setgid, setuid, kill = 6, 7, 5
	sys := &syscall.SysProcAttr{
		Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{setgid, setuid, kill},
	}
	m := startMasterSys(t, testkit.FreeAddr(t), nil, sys, "--workers", "2", "--control", "", "--user", "daemon")
	ready := m.waitReady(2)
	// Capabilities are per thread, and the master's spawning thread drops
	// its ambient set on purpose; that thread may be the one
	// /proc/PID/status shows. Any other thread keeps them.
	if !anyThreadHasAmbient(t, m.cmd.Process.Pid) {
		t.Fatalf("no thread of the master has ambient capabilities: the test set-up failed")
	}
	for slot, pid := range ready {
		st := procStatus(t, pid)
		for _, set := range []string{"CapEff", "CapPrm", "CapAmb"} {
			if st[set] != "0000000000000000" {
				t.Errorf("slot %d: %s %s, want none of the master's", slot, set, st[set])
			}
		}
		if uids := strings.Fields(st["Uid"]); uids[0] != "1" {
			t.Errorf("slot %d: Uid %v, want daemon (1)", slot, uids)
		}
	}
}

// A master binary with file capabilities (setcap) in master socket mode:
// its exec shim gains them, and the kernel clears the parent-death signal
// on such an exec. The shim sets it again, so SIGKILL of the master still
// takes the children with it.
func TestSetcapMasterChildrenDieWithIt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for setcap and to start the master as another user")
	}
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Skip("setcap is not installed (Debian: libcap2-bin)")
	}
	// Not t.TempDir(): its parent is private to root, and the master runs
	// as nobody.
	dir, err := os.MkdirTemp("", "prefork-setcap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"master", "child"} {
		data, err := os.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	master := filepath.Join(dir, "master")
	if out, err := exec.Command(setcap, "cap_setuid,cap_setgid,cap_kill+ep", master).CombinedOutput(); err != nil {
		t.Skipf("setcap on %s: %v: %s", dir, err, out)
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	m := startMasterBin(t, master, testkit.FreeAddr(t), nil, sys, "--workers", "2", "--control", "",
		"--sockets", "master", "--user", "daemon", "--drain-timeout", "2s")
	ready := m.waitReady(2)
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "children gone after SIGKILL of the setcap master", func() bool {
		for _, pid := range ready {
			if testkit.Alive(pid) {
				return false
			}
		}
		return true
	})
}
