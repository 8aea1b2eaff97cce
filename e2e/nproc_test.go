package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// freeUID returns a uid in 47100..47199 that no process uses and no
// account names: RLIMIT_NPROC counts every task of a uid on the machine,
// so the test's count must be its own.
func freeUID(t *testing.T) int {
	t.Helper()
	used := map[int]bool{}
	if passwd, err := os.ReadFile("/etc/passwd"); err == nil {
		for line := range strings.SplitSeq(string(passwd), "\n") {
			if f := strings.Split(line, ":"); len(f) > 2 {
				if n, err := strconv.Atoi(f[2]); err == nil {
					used[n] = true
				}
			}
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var st syscall.Stat_t
		if _, err := strconv.Atoi(e.Name()); err == nil && syscall.Stat("/proc/"+e.Name(), &st) == nil {
			used[int(st.Uid)] = true
		}
	}
	for uid := 47100; uid < 47200; uid++ {
		if !used[uid] {
			return uid
		}
	}
	t.Fatal("no free uid in 47100..47199")
	return 0
}

// uidProcs returns the pids of the processes of uid.
func uidProcs(uid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var st syscall.Stat_t
		pid, err := strconv.Atoi(e.Name())
		if err == nil && syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// An unprivileged master with RLIMIT_NPROC 25 and 32 workers: the
// children exhaust the limit, and the master neither aborts nor takes
// them down. It says once which limit stops its forks, serves with the
// children it could start, and stops cleanly.
func TestProcessLimitMasterSurvives(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the master as a uid of its own (root ignores RLIMIT_NPROC)")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit is not installed (util-linux)")
	}
	uid := freeUID(t)
	t.Cleanup(func() {
		// The harness kills the master and the children it logged; a
		// child killed mid-start may not have been logged.
		for _, pid := range uidProcs(uid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// Not t.TempDir(): its parent is private to root.
	dir, err := os.MkdirTemp("", "prefork-nproc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "master")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --nproc=25 -- %s \"$@\"\n", prlimit, filepath.Join(bin, "master"))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	m := startMasterBin(t, wrapper, testkit.FreeAddr(t), nil, sys, "--workers", "32", "--control", "")
	const limitMsg = "children cannot be forked: a process limit is reached; each failed fork is a failed start of its slot (restarted with backoff), and the master runs on"
	said := m.waitMsg(30*time.Second, 1, limitMsg)
	if lim := said[0].str("limit"); !strings.Contains(lim, fmt.Sprintf("uid %d (RLIMIT_NPROC 25", uid)) {
		t.Errorf("limit line names %q, want the RLIMIT_NPROC 25 of uid %d", lim, uid)
	}
	m.waitMsg(30*time.Second, 1, "child ready")
	// Slots keep failing and restarting for a while, and a ready child
	// that needs one more thread dies too (with a request of its own, at
	// times): the master must live through it and keep serving.
	served, failed := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			t.Fatalf("master exited under the process limit: %v", m.err)
		default:
		}
		if _, err := getWhoami(m.addr); err != nil {
			failed++
		} else {
			served++
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("under the limit: %d requests served, %d failed", served, failed)
	if served < failed {
		t.Errorf("%d requests served, %d failed: want most served", served, failed)
	}
	if n := len(m.lines(limitMsg)); n != 1 {
		t.Errorf("the limit was said %d times, want once", n)
	}
	m.signal(syscall.SIGTERM)
	if code := m.wait(30 * time.Second); code != 0 {
		t.Errorf("master exit %d, want 0", code)
	}
	eventually(t, 10*time.Second, "every process of the test's uid gone", func() bool { return len(uidProcs(uid)) == 0 })
}
