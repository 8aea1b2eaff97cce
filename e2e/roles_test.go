package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/testkit"
)

// playRole runs the test binary as a child program of the master.
func playRole(role string) int {
	switch role {
	case "fdlist":
		return fdList()
	}
	fmt.Fprintln(os.Stderr, "unknown E2E_PREFORK_ROLE", role)
	return 2
}

// fdList writes the descriptors this process inherited, one "fd target"
// per line, to E2E_PREFORK_OUT.SLOT, says READY=1 and waits to be stopped.
// An inherited descriptor is one without FD_CLOEXEC: exec closed every
// other, and whatever the Go runtime opened itself since (it keeps cgroup
// files open, for one) has the flag.
func fdList() int {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil {
			return 1
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var lines []string
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == dir {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + name)
		lines = append(lines, fmt.Sprintf("%d %s", fd, target))
	}
	unix.Close(dir)
	// Socket activation: LISTEN_PID must name this very process.
	lines = append(lines, fmt.Sprintf("LISTEN_FDS=%s LISTEN_PID_is_self=%v LISTEN_FDNAMES=%s PREFORK_COUNTERS_FD=%s",
		os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()), os.Getenv("LISTEN_FDNAMES"),
		os.Getenv("PREFORK_COUNTERS_FD")))
	if err := os.WriteFile(os.Getenv("E2E_PREFORK_OUT")+"."+os.Getenv("PREFORK_SLOT"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return 1
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
	time.Sleep(time.Minute) // SIGTERM ends it
	return 0
}

// inherited is what the fdlist role saw in one child.
type inherited struct {
	fds        []string          // descriptor numbers, in order
	targets    map[string]string // what each one points at
	activation string            // the LISTEN_* line
	raw        string
}

// runFDList starts the test binary in the fdlist role under a master with
// args, and returns the master and what each of its workers children
// inherited, by slot.
func runFDList(t *testing.T, workers int, args ...string) (*master, []inherited) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fds")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"--workers", strconv.Itoa(workers)}, args...)
	m := startMasterOn(t, testkit.FreeAddr(t), []string{"E2E_PREFORK_ROLE=fdlist", "E2E_PREFORK_OUT=" + out},
		append(full, "--", self)...)
	m.waitReady(workers)
	var all []inherited
	for slot := range workers {
		data, err := os.ReadFile(fmt.Sprintf("%s.%d", out, slot))
		if err != nil {
			t.Fatal(err)
		}
		in := inherited{targets: map[string]string{}, raw: string(data)}
		for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
			if strings.HasPrefix(line, "LISTEN_") {
				in.activation = line
				continue
			}
			fd, target, _ := strings.Cut(line, " ")
			in.fds = append(in.fds, fd)
			in.targets[fd] = target
		}
		all = append(all, in)
	}
	return m, all
}
