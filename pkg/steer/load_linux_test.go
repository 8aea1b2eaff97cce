package steer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// loadError names what is missing, and every error it returns wraps both
// ErrUnsupported and the kernel's error.
func TestLoadError(t *testing.T) {
	verifier := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: (b7) r0 = 0", "", "R0 !read_ok", "processed 2 insns"}}
	tests := []struct {
		name string
		err  error
		want string // in the error's text
	}{
		{name: "no permission", err: fmt.Errorf("create map steer_sockets: %w", unix.EPERM), want: "no permission for BPF"},
		{name: "access denied", err: unix.EACCES, want: "no permission for BPF"},
		{name: "program type unknown", err: fmt.Errorf("load program: %w", unix.EINVAL), want: "kernel without SK_REUSEPORT programs"},
		{name: "no bpf syscall", err: unix.ENOSYS, want: "kernel without SK_REUSEPORT programs"},
		{name: "feature missing", err: ebpf.ErrNotSupported, want: "kernel without SK_REUSEPORT programs"},
		{name: "verifier", err: fmt.Errorf("load program: %w", verifier), want: "the verifier rejected the program"},
		{name: "anything else", err: unix.ENOMEM, want: "cannot allocate memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadError(tt.err)
			if !errors.Is(err, ErrUnsupported) || !errors.Is(err, tt.err) {
				t.Errorf("loadError(%v) = %v, want it to wrap ErrUnsupported and the cause", tt.err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadError(%v) = %q, want it to say %q", tt.err, err, tt.want)
			}
		})
	}
	if got := loadError(verifier).Error(); !strings.Contains(got, "log ends: 0: (b7) r0 = 0 | R0 !read_ok | processed 2 insns") {
		t.Errorf("verifier error %q does not end with the log's non-empty lines", got)
	}
}

// Without CAP_BPF and CAP_NET_ADMIN, Load and Supported fail with
// ErrUnsupported and say that the permission is missing: the real
// condition behind "--steer on, but the steering program cannot load".
// As root, the test runs again as nobody (uid 65534), from a copy of the
// test binary that user can execute.
func TestLoadUnprivileged(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t, "^TestLoadUnprivileged$")
		return
	}
	s, err := Load(4)
	if err == nil {
		s.Close()
		t.Skip("this process may load BPF programs without root (it has CAP_BPF and CAP_NET_ADMIN)")
	}
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no permission for BPF") {
		t.Errorf("Load without privileges: %v, want ErrUnsupported and no permission", err)
	}
	if err := Supported(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Supported without privileges: %v, want ErrUnsupported", err)
	}
}

// runAsNobody runs the tests matching pattern in a copy of the test binary
// as uid and gid 65534, which have no capabilities, and fails unless they
// pass there: a skip does not count.
func runAsNobody(t *testing.T, pattern string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "prefork-steer-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "steer.test")
	if err := copyExecutable(bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run="+pattern, "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "--- SKIP") || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("as uid 65534: %v, want a pass; output:\n%s", err, out)
	}
}

// copyExecutable copies the running test binary to path, mode 0755.
func copyExecutable(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
