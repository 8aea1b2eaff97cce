package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// groups numbers the test groups, unique across the runs of -count.
var groups atomic.Uint64

// own returns the test process's cgroup, or skips the test, saying why
// child cgroups are not available (not root, no cgroup v2, ...).
func own(t *testing.T) *Parent {
	t.Helper()
	p, err := Own()
	if err != nil {
		t.Skipf("needs child cgroups (run as root on cgroup v2): %v", err)
	}
	return p
}

// newGroup makes a group that is killed and removed when the test ends,
// even when it fails.
func newGroup(t *testing.T, p *Parent) *Group {
	t.Helper()
	name := fmt.Sprintf("prefork-test-%d-%d", os.Getpid(), groups.Add(1))
	g, err := p.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Remove(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return g
}

// startIn starts argv forked straight into the group whose directory is
// dir, and kills and reaps it when the test ends.
func startIn(t *testing.T, dir string, argv ...string) *exec.Cmd {
	t.Helper()
	fd, err := (&Group{Dir: dir}).Open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", argv, dir, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// named returns the pids among pids whose command is comm.
func named(pids []int, comm string) []int {
	var out []int
	for _, pid := range pids {
		c, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err == nil && strings.TrimSpace(string(c)) == comm {
			out = append(out, pid)
		}
	}
	return out
}

// ppid reads the parent pid from /proc/PID/stat, after the command name,
// which is in parentheses and may hold spaces.
func ppid(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// deadOrZombie reports whether pid has exited: gone from /proc, or a
// zombie waiting for its parent (init, for an orphan) to reap it.
func deadOrZombie(pid int) bool {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return strings.HasPrefix(parseState(status), "Z")
}

func TestOwn(t *testing.T) {
	p := own(t)
	if _, err := os.Stat(filepath.Join(p.Dir, fileProcs)); err != nil {
		t.Fatalf("own cgroup %s: %v", p.Dir, err)
	}
	procs, err := os.ReadFile(filepath.Join(p.Dir, fileProcs))
	if err != nil {
		t.Fatal(err)
	}
	pids, err := parsePids(procs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, os.Getpid()) {
		t.Errorf("own cgroup %s does not list this process %d", p.Dir, os.Getpid())
	}
	t.Logf("own cgroup: %s", p.Dir)
}

// TestOpenPlacesChild shows that the child runs in its group from its
// first instruction: it reads its own cgroup.
func TestOpenPlacesChild(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	fd, err := g.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("cat", "/proc/self/cgroup")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseProcCgroup(out)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	mine, err := parseProcCgroup(self)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(mine, filepath.Base(g.Dir)); got != want {
		t.Errorf("child's cgroup %q, want %q", got, want)
	}
}

// TestKillRemove forks shells into groups, whose processes include ones
// outside the shell's process tree and session, and checks that Kill and
// Remove end them all and leave no directory.
func TestKillRemove(t *testing.T) {
	p := own(t)
	tests := []struct {
		name   string
		script string
		// escaped says that one sleep is reparented (double fork) and
		// so out of reach of the shell's process group and session.
		escaped bool
	}{
		{name: "background job", script: "sleep 60 & sleep 60"},
		{name: "double-forked daemon", script: "(setsid sleep 60 &) ; sleep 60", escaped: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGroup(t, p)
			cmd := startIn(t, g.Dir, "sh", "-c", tt.script)
			var sleeps []int
			waitFor(t, "two sleeps in the group", func() bool {
				pids, err := g.Procs()
				if err != nil {
					t.Fatal(err)
				}
				sleeps = named(pids, "sleep")
				return len(sleeps) == 2
			})
			if tt.escaped {
				orphans := 0
				for _, pid := range sleeps {
					if ppid(t, pid) != cmd.Process.Pid {
						orphans++
					}
				}
				if orphans == 0 {
					t.Fatalf("no sleep of %v left the shell %d", sleeps, cmd.Process.Pid)
				}
			}
			if pop, err := g.Populated(); err != nil || !pop {
				t.Fatalf("Populated = %v, %v; want true", pop, err)
			}

			if err := g.Kill(); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Errorf("shell: %v, want killed by SIGKILL", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := g.Remove(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(g.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s after Remove: %v, want not exist", g.Dir, err)
			}
			for _, pid := range sleeps {
				waitFor(t, fmt.Sprintf("sleep %d to be dead", pid), func() bool { return deadOrZombie(pid) })
			}
		})
	}
}

// TestRemoveWithoutKill removes a group whose only process is still alive,
// without Kill first: Remove kills it itself.
func TestRemoveWithoutKill(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	cmd := startIn(t, g.Dir, "sleep", "60")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("sleep exited 0, want killed")
	}
	if _, err := os.Stat(g.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after Remove: %v", g.Dir, err)
	}
	// Removing again, as a cleanup does, is not an error.
	if err := g.Remove(ctx); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// TestRemoveNested removes a group in which the child made a group of its
// own, holding a process.
func TestRemoveNested(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	sub := filepath.Join(g.Dir, "inner")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	outer := startIn(t, g.Dir, "sleep", "60")
	inner := startIn(t, sub, "sleep", "60")
	pids, err := g.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{outer.Process.Pid, inner.Process.Pid}; !slices.Equal(pids, want) {
		t.Errorf("Procs = %v, want %v", pids, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after Remove: %v", g.Dir, err)
	}
}

// TestRemoveReportsLeft leaves a process in the group (no kill) and checks
// that Remove gives up when ctx ends, naming it.
func TestRemoveReportsLeft(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	cmd := startIn(t, g.Dir, "sleep", "60")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := g.remove(ctx, func() error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("gave up after %v, want about 150ms", took)
	}
	want := fmt.Sprintf("pid %d (sleep, S (sleeping))", cmd.Process.Pid)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to name %q", err, want)
	}
	if _, serr := os.Stat(g.Dir); serr != nil {
		t.Errorf("group removed although populated: %v", serr)
	}
}

// TestRemoveWakesOnExit checks that Remove is woken by the kernel's
// notification of cgroup.events, not by its polling slice, made longer
// than the test's deadline here.
func TestRemoveWakesOnExit(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	defer func(d time.Duration) { pollSlice = d }(pollSlice)
	pollSlice = time.Hour
	cmd := startIn(t, g.Dir, "sleep", "0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := g.waitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("sleep: %v", err)
	}
}

// TestNewReplacesStale makes a group of a name already taken by a
// populated one, as a crashed master with the same pid would leave.
func TestNewReplacesStale(t *testing.T) {
	p := own(t)
	g := newGroup(t, p)
	cmd := startIn(t, g.Dir, "sleep", "60")
	g2, err := p.New(filepath.Base(g.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("stale sleep exited 0, want killed")
	}
	pids, err := g2.Procs()
	if err != nil || len(pids) != 0 {
		t.Errorf("new group: Procs = %v, %v; want empty", pids, err)
	}
	if pop, err := g2.Populated(); err != nil || pop {
		t.Errorf("new group: Populated = %v, %v; want false", pop, err)
	}
}

func TestNewBadName(t *testing.T) {
	p := own(t)
	if _, err := p.New("a/b"); err == nil {
		t.Error("New(a/b): no error")
	}
}
