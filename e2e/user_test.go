package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
				if st["CapEff"] != "0000000000000000" {
					t.Errorf("slot %d pid %d: effective capabilities %s, want none", slot, pid, st["CapEff"])
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
