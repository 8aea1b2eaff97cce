package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/prefork/prefork/internal/execshim"
	"golang.org/x/sys/unix"
)

// The exec shim of master socket mode. LISTEN_PID must be the child's own
// pid, known only after the fork: startChild starts a shim, which sets it
// and execs the command in place, keeping the pid, fd 3 and the
// parent-death signal. The shim is execshim's few hundred bytes of machine
// code where it has them (amd64) and they run; else the master's own
// binary, started with ShimCommand (ExecShim), which costs a Go runtime
// start and every package initialiser the master links: several
// milliseconds per child instead of one more exec.

// envShimParent tells the exec shim the master's pid; the shim removes it.
const envShimParent = execshim.ParentEnv

// ShimCommand is the first argument that makes the master's binary act as
// the exec shim of master socket mode (see ExecShim); the native shim is
// given it too, and ignores it.
const ShimCommand = "__prefork_exec"

var (
	shimOnce sync.Once
	shimPath string
)

// execShimPath returns the program startChild runs as the exec shim, with
// argv {master's path, ShimCommand, command...}: the native shim (a
// descriptor of the master, /proc/self/fd/N), or /proc/self/exe, the
// master's own binary. Both are resolved in the forked child, and both
// are the running master's own, even if its file was since replaced by an
// upgrade. The first call loads and checks the native shim (a fork and a
// wait for that pid alone): New calls it, before the loop reaps anything.
func execShimPath() string {
	shimOnce.Do(func() {
		path, err := execshim.Open()
		if err != nil {
			path = "/proc/self/exe"
		}
		shimPath = path
	})
	return shimPath
}

// ExecShim is what the master's binary runs when started with ShimCommand:
// it sets LISTEN_PID to its own pid, which the socket-activation protocol
// demands and which the master cannot know before the fork, and execs
// argv in place, keeping the pid, fd 3 and the parent-death signal.
func ExecShim(argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec shim: no command")
	}
	// The kernel clears the parent-death signal when an exec gains
	// privilege: a master binary with file capabilities (setcap) makes
	// this exec of itself such a one. Set it again, then make sure the
	// master did not die before it was set.
	// The parent-death signal belongs to a thread; the exec must happen
	// on the one that sets it.
	runtime.LockOSThread()
	master := os.Getenv(envShimParent)
	os.Unsetenv(envShimParent)
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("exec shim: parent-death signal: %w", err)
	}
	if master != strconv.Itoa(os.Getppid()) {
		return fmt.Errorf("exec shim: the master (pid %s) is gone", master)
	}
	env := append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	return fmt.Errorf("exec shim: %w", syscall.Exec(argv[0], argv, env))
}
