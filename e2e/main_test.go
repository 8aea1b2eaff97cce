package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin is the directory holding the master and child binaries under test.
var bin string

// TestMain builds the binaries once, or takes them from PREFORK_E2E_BIN. The test binary doubles as a child program: with
// E2E_PREFORK_ROLE set it plays that role instead of running tests.
func TestMain(m *testing.M) {
	if role := os.Getenv("E2E_PREFORK_ROLE"); role != "" {
		os.Exit(playRole(role))
	}
	bin = os.Getenv("PREFORK_E2E_BIN")
	cleanup := func() {}
	if bin == "" {
		dir, err := os.MkdirTemp("", "prefork-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		bin = dir
		// Children started as another user (--user) exec from here.
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// The master is built with the race detector, so that the
		// end-to-end runs check it for races too; the reference child,
		// whose library has race-checked tests of its own, is not: it
		// carries the load of the load tests.
		for _, b := range []struct{ flags, pkg string }{
			{"-race", "github.com/prefork/prefork/cmd/master"},
			{"", "github.com/prefork/prefork/cmd/child"},
		} {
			args := []string{"build", "-o", dir + string(filepath.Separator)}
			if b.flags != "" {
				args = append(args, b.flags)
			}
			build := exec.Command("go", append(args, b.pkg)...)
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build binaries:", err)
				cleanup()
				os.Exit(1)
			}
		}
	}
	// A race-built program sleeps 1 s at exit by default (atexit_sleep_ms),
	// which every `master status` and `master reload` of a test would pay;
	// a race found still makes it exit 66.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	code := m.Run()
	cleanup()
	os.Exit(code)
}
