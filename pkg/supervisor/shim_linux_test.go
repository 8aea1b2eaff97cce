package supervisor

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
)

// The exec shim startChild runs: on amd64 the native one, which gives the
// command LISTEN_PID = its own pid.
func TestExecShimPath(t *testing.T) {
	path := execShimPath()
	if runtime.GOARCH == "amd64" && path == "/proc/self/exe" {
		t.Errorf("exec shim %s on amd64, want the native one", path)
	}
	if path == "/proc/self/exe" {
		t.Skip("the shim is the master's binary, which a test binary is not")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	cmd := &exec.Cmd{Path: path, Args: []string{"master", ShimCommand, "/bin/sh", "-c", `test "$LISTEN_PID" = "$$" && test -z "$` + envShimParent + `"`},
		Env: []string{envShimParent + "=" + strconv.Itoa(os.Getpid())}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the shim ran sh: %v: %s", err, out)
	}
}
