//go:build linux

package testkit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{err: fmt.Errorf("dial: %w", syscall.ECONNREFUSED), want: "refused"},
		{err: fmt.Errorf("read: %w", syscall.ECONNRESET), want: "reset"},
		{err: io.ErrUnexpectedEOF, want: "eof"},
		{err: fmt.Errorf("%w: 503", ErrStatus), want: "status"},
		{err: syscall.EPIPE, want: "broken pipe"},
		{err: errors.New("odd"), want: "other"},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("Alive(self) = false")
	}
	if Alive(1 << 30) {
		t.Error("Alive(no such pid) = true")
	}
}

// SetupNetns must refuse to run in the namespace of its parent. The guard
// is tested alone, so that a broken guard can never set the machine's own
// sysctl.
func TestSetupNetnsRefusesParentNamespace(t *testing.T) {
	self, _ := os.Readlink("/proc/self/ns/net")
	parent, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getppid()))
	if self != parent {
		t.Skip("this test process already runs in a namespace of its own")
	}
	if err := checkOwnNetns(); err == nil {
		t.Fatal("checkOwnNetns in the parent's namespace = nil")
	}
}
