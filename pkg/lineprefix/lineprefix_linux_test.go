package lineprefix

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriteEndBlocking checks that the write end is in blocking mode for
// the child, in the master and as the child sees its stdout.
func TestWriteEndBlocking(t *testing.T) {
	var out bytes.Buffer
	c, w := newCopier(t, &out)
	// Through SyscallConn, as Fd would itself put it in blocking mode.
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	if cerr := rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Errorf("write end flags %#o: O_NONBLOCK set", flags)
	}
	cmd := exec.Command("sh", "-c", "grep ^flags: /proc/self/fdinfo/1")
	cmd.Stdout = w
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	c.Start("[p]")
	wait(t, c)
	f := strings.Fields(out.String())
	if len(f) != 3 {
		t.Fatalf("child's fdinfo: %q", out.String())
	}
	childFlags, err := strconv.ParseInt(f[2], 8, 64)
	if err != nil {
		t.Fatal(err)
	}
	if childFlags&unix.O_NONBLOCK != 0 {
		t.Errorf("child's stdout flags %#o: O_NONBLOCK set", childFlags)
	}
}

// TestChildAndGrandchild runs a shell that leaves a background job behind:
// the copy ends only when the job, which inherited stdout, has exited too.
func TestChildAndGrandchild(t *testing.T) {
	var out bytes.Buffer
	c, w := newCopier(t, Shared(&out))
	cmd := exec.Command("sh", "-c", "echo one; (sleep 0.3; echo two) & printf three")
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	prefix := Prefix(3, cmd.Process.Pid)
	c.Start(prefix)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
		t.Fatal("copy ended while the background job still holds the pipe")
	case <-time.After(100 * time.Millisecond):
	}
	wait(t, c)
	// "three" has no newline, so the line is held until the background
	// job ends it: partial writes of different writers are not told apart.
	want := prefix + " one\n" + prefix + " threetwo\n"
	if got := out.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
