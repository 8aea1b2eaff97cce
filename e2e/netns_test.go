package e2e

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/prefork/prefork/internal/testkit"
)

// inNetns runs the calling top-level test again in a new network namespace
// with loopback up and net.ipv4.tcp_migrate_req set to migrate, and
// reports whether the caller is that second run (and should do its work).
// The first run only relays the verdict. Where a namespace cannot be made
// the test is skipped with the reason.
func inNetns(t *testing.T, migrate int) bool {
	t.Helper()
	if os.Getenv("PREFORK_E2E_NETNS") != "" {
		if err := testkit.SetupNetns(migrate); err != nil {
			t.Fatalf("set up the network namespace: %v", err)
		}
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "PREFORK_E2E_NETNS=1", "PREFORK_E2E_BIN="+bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(err.Error(), "operation not permitted") {
		t.Skipf("cannot create a network namespace (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Logf("in a network namespace of its own, tcp_migrate_req=%d:\n%s", migrate, out)
	if err != nil {
		t.Fatalf("the run in the network namespace failed: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped in the network namespace")
	}
	return false
}
