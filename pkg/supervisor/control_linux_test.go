package supervisor

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The default control path is never in a directory others may write
// (issue 12, item 6: /tmp/prefork-UID.sock could be squatted).
func TestDefaultControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		euid int
		xdg  string
		want string
	}{
		{name: "root", euid: 0, want: "/run/prefork/prefork.sock"},
		{name: "root with a runtime directory", euid: 0, xdg: "/run/user/0", want: "/run/prefork/prefork.sock"},
		{name: "user with a runtime directory", euid: 1000, xdg: "/run/user/1000", want: "/run/user/1000/prefork.sock"},
		{name: "user without", euid: 1000, want: "/tmp/prefork-1000/prefork.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := DefaultControl(tt.euid, tt.xdg); got != tt.want {
				t.Errorf("DefaultControl(%d, %q) = %q, want %q", tt.euid, tt.xdg, got, tt.want)
			}
		})
	}
}

// The private directory of the default control path is made if missing,
// with mode 0700, and refused when others have access; any directory
// where others could replace the socket is refused.
func TestListenControlDirectory(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	made := filepath.Join(base, "new")
	if err := prepareControlDir(made, true); err != nil {
		t.Fatalf("a missing directory of the default path: %v", err)
	}
	if fi, err := os.Stat(made); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the directory made for the socket: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if err := os.Chmod(made, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := prepareControlDir(made, false); err != nil {
		t.Errorf("a directory of mode 0755 of the master's user: %v", err)
	}
	if err := prepareControlDir(filepath.Join(base, "missing"), false); err == nil {
		t.Errorf("a missing directory given with --control: made, want refused")
	}
	// The private directory of a user without a runtime directory: made
	// by someone else first, or open to others, it is refused.
	private := privateControlDir(os.Geteuid())
	if _, err := os.Stat(private); err == nil {
		t.Logf("%s exists; not checking the private directory's mode", private)
	} else if err := os.Mkdir(private, 0o755); err == nil {
		defer os.Remove(private)
		if err := os.Chmod(private, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := prepareControlDir(private, true); err == nil || !strings.Contains(err.Error(), "mode 0700") {
			t.Errorf("the private directory with mode 0755: %v, want refused", err)
		}
		// A symbolic link by that name, to a directory of the user's
		// with mode 0700: someone else may have put it there.
		if err := os.Remove(private); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(made, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(made, private); err != nil {
			t.Fatal(err)
		}
		if err := prepareControlDir(private, true); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("the private directory as a symbolic link: %v, want refused", err)
		}
	}

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := listenControl(filepath.Join(open, "ctl.sock"))
	if err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Errorf("listenControl in a directory of mode 0777: %v, want refused", err)
	}

	sticky := filepath.Join(base, "sticky")
	if err := os.Mkdir(sticky, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	ln, err := listenControl(filepath.Join(sticky, "ctl.sock"))
	if err != nil {
		t.Errorf("listenControl in a sticky directory such as /tmp: %v", err)
	} else {
		ln.Close()
	}
}

// A socket of another user at the control path is refused, and says
// whose it is.
func TestListenControlOtherUsersSocket(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a socket to another user")
	}
	path := filepath.Join(t.TempDir(), "ctl.sock")
	squat, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err = listenControl(path)
	if err == nil || !strings.Contains(err.Error(), "uid 65534, another user") {
		t.Errorf("listenControl on another user's socket: %v, want refused naming uid 65534", err)
	}
}
