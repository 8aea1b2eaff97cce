package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/prefork/prefork/pkg/cgroup"
)

// The sweep at start takes only what is surely stale: empty cgroups of a
// master pid that is gone, or of an earlier run with our pid; never a
// group with a process in it (a master in another pid namespace looks
// gone from here), nor one of a master that runs.
func TestSweepGroups(t *testing.T) {
	parent, err := cgroup.Own()
	if err != nil {
		t.Skipf("no child cgroups here: %v", err)
	}
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid
	p := &osProcs{log: slog.New(slog.DiscardHandler), cgroups: parent, token: "now"}
	mk := func(name string) *cgroup.Group {
		g, err := parent.New(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Remove(t.Context()) })
		return g
	}
	staleEmpty := mk(fmt.Sprintf("prefork-%d-old-1", dead))
	earlierRun := mk(fmt.Sprintf("prefork-%d-before-1", os.Getpid()))
	thisRun := mk(fmt.Sprintf("prefork-%d-now-1", os.Getpid()))
	running := mk(fmt.Sprintf("prefork-%d-tok-1", os.Getppid()))
	populated := mk(fmt.Sprintf("prefork-%d-other-1", dead))
	fd, err := populated.Open()
	if err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("/bin/sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = sleeper.Start()
	syscall.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	p.sweepGroups(0)
	p.removal.Wait()
	for _, tc := range []struct {
		g    *cgroup.Group
		kept bool
	}{{staleEmpty, false}, {earlierRun, false}, {thisRun, true}, {running, true}, {populated, true}} {
		_, err := os.Stat(tc.g.Dir)
		if kept := err == nil; kept != tc.kept {
			t.Errorf("%s: kept %v, want %v", filepath.Base(tc.g.Dir), kept, tc.kept)
		}
	}
	if err := sleeper.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process in a populated group was killed: %v", err)
	}
}
