package proctree

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMembers: a shell in a process group of its own starts a grandchild
// that leaves the group (setsid), and a process that stays in the group
// but is re-parented away when its parent (a subshell) exits.
func TestMembers(t *testing.T) {
	t.Parallel()
	const script = `sh -c 'setsid sleep 30 & echo g=$!; wait' &
(sleep 30 & echo r=$!)
exec sleep 30`
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pid, out := start(t, cmd, false)
	got := map[string]int{}
	for len(got) < 2 {
		line, err := readLine(out)
		if err != nil {
			t.Fatalf("read the pids: %v (got %v)", err, got)
		}
		name, pidText, _ := strings.Cut(line, "=")
		n, err := strconv.Atoi(pidText)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		got[name] = n
		t.Cleanup(func() { unix.Kill(n, unix.SIGKILL) })
	}
	grandchild, reparented := got["g"], got["r"]
	eventually(t, "grandchild leaves the group", func() (bool, error) {
		return stat(t, grandchild).pgrp != pid, nil
	})
	eventually(t, "member re-parented out of the group", func() (bool, error) {
		return stat(t, stat(t, reparented).ppid).pgrp != pid, nil
	})
	// Once the shell has reaped the subshell, it execs sleep.
	eventually(t, "sh execs sleep", func() (bool, error) {
		comm, err := os.ReadFile(procPath(pid, "/comm"))
		return string(comm) == "sleep\n", err
	})

	members, err := Members(pid, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range members {
			unix.Kill(m, unix.SIGKILL)
		}
	})
	// Both ways, whichever Members took, find the same processes.
	for name, find := range map[string]func(int, []int) ([]int, error){
		"children files": membersByChildren,
		"stat":           membersByStat,
	} {
		got, err := find(pid, nil)
		if err != nil || !slices.Equal(got, members) {
			t.Errorf("members by %s = %v, %v; Members = %v", name, got, err, members)
		}
	}
	for _, want := range []int{pid, grandchild, reparented} {
		if !slices.Contains(members, want) {
			t.Errorf("Members(%d) = %v; want %d in it", pid, members, want)
		}
	}
	if slices.Contains(members, os.Getpid()) {
		t.Errorf("Members(%d) = %v; the test process, its parent, is not a member", pid, members)
	}
	// sh (pid), the middle sh, and the two sleeps.
	if len(members) != 4 {
		t.Errorf("Members(%d) = %v; want 4 processes", pid, members)
	}
}

// TestMembersCgroup: the processes of the cgroup count, with their
// descendants.
func TestMembersCgroup(t *testing.T) {
	t.Parallel()
	outsider, _ := start(t, exec.Command("sleep", "30"), false)
	dir := t.TempDir()
	data := strconv.Itoa(outsider) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	members, err := Members(os.Getpid(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// The outsider is both the test's child and in the "cgroup": listed once.
	if n := count(members, outsider); n != 1 || !slices.Contains(members, os.Getpid()) {
		t.Fatalf("Members(self, %s) = %v; want self and %d once", dir, members, outsider)
	}
	if !slices.IsSorted(members) {
		t.Fatalf("Members = %v; want sorted", members)
	}

	if _, err := Members(os.Getpid(), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("Members with a missing cgroup: want an error")
	}
}

// TestMembersRealCgroup: the test process is in its own cgroup v2.
func TestMembersRealCgroup(t *testing.T) {
	t.Parallel()
	dir := ownCgroup(t)
	members, err := Members(1<<30, dir) // no such root: the cgroup alone
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(members, os.Getpid()) {
		t.Fatalf("Members(none, %s) = %v; want the test process in it", dir, members)
	}
}

// ownCgroup returns the cgroup v2 directory of the test process, or skips
// the test: "0::PATH" of /proc/self/cgroup under where cgroup2 is mounted.
func ownCgroup(t *testing.T) string {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Skip(err)
	}
	root := ""
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			root = f[1]
		}
	}
	cgroups, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(cgroups), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && root != "" {
			return filepath.Join(root, path)
		}
	}
	t.Skipf("no cgroup v2: mounted at %q, cgroups %q", root, cgroups)
	return ""
}

// TestMembersGone: a root that no longer exists has no members.
func TestMembersGone(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	members, err := Members(cmd.Process.Pid, "")
	if err != nil || len(members) != 0 {
		t.Fatalf("Members(exited) = %v, %v; want none", members, err)
	}
}

// stat reads /proc/PID/stat, failing the test if it cannot.
func stat(t *testing.T, pid int) procStat {
	t.Helper()
	data, err := os.ReadFile(procPath(pid, "/stat"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseStat(data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// count counts v in s.
func count(s []int, v int) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
