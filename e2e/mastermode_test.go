package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// In master socket mode a child inherits its slot's listener as fd 3, with
// LISTEN_PID naming the child itself, and its counter page as fd 4; and the
// master's own listeners stay non-blocking (TRAPS 5).
func TestMasterModeDescriptors(t *testing.T) {
	t.Parallel()
	m, children := runFDList(t, 2, "--sockets", "master")
	for slot, in := range children {
		if strings.Join(in.fds, ",") != "0,1,2,3,4" {
			t.Errorf("slot %d inherited descriptors:\n%s\nwant 0 to 4 only", slot, in.raw)
		}
		if !strings.HasPrefix(in.targets["4"], "/memfd:") {
			t.Errorf("slot %d: fd 4 is %s, want the counter page", slot, in.targets["4"])
		}
		if !strings.HasPrefix(in.targets["3"], "socket:") {
			t.Errorf("slot %d: fd 3 is %s, want a socket", slot, in.targets["3"])
		}
		if in.activation != "LISTEN_FDS=1 LISTEN_PID_is_self=true LISTEN_FDNAMES=default PREFORK_COUNTERS_FD=4" {
			t.Errorf("slot %d: socket activation variables %q", slot, in.activation)
		}
	}
	_, port, _ := net.SplitHostPort(m.addr)
	flags := listenerFlags(t, m.cmd.Process.Pid, port)
	if len(flags) != 2 {
		t.Fatalf("the master holds %d listeners on port %s, want 2 (one per slot)", len(flags), port)
	}
	for fd, f := range flags {
		if f&syscall.O_NONBLOCK == 0 {
			t.Errorf("the master's listener fd %d lost O_NONBLOCK (flags %o)", fd, f)
		}
	}
}

// listenerFlags returns the file status flags of pid's TCP listeners on
// port, by descriptor.
func listenerFlags(t *testing.T, pid int, port string) map[int]int {
	t.Helper()
	inodes := listenInodes(t, port)
	flags := map[int]int{}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || !inodes[target] {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatal(err)
				}
				flags[fd] = int(f)
			}
		}
	}
	return flags
}

// listenInodes returns "socket:[INODE]" for every listener on port.
func listenInodes(t *testing.T, port string) map[string]bool {
	t.Helper()
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", p)
	inodes := map[string]bool{}
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 10 && f[3] == "0A" && strings.HasSuffix(f[1], want) {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	return inodes
}

// In master socket mode the connections waiting in a slot's queue outlive
// its child: with the child stopped (SIGSTOP) and connections queued on its
// socket, SIGKILL it; its replacement answers every one of them, with no
// sysctl.
//
// With steering on, the crashed slot's socket is renewed and its queue
// moves to the healthy slots (with one worker, to the new socket): the
// answers come from the other child or the replacement, and none is lost.
func TestMasterModeCrashKeepsQueue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		workers int
		steer   string
	}{{2, "off"}, {2, "on"}, {1, "on"}} {
		t.Run(fmt.Sprintf("workers=%d,steer=%s", tc.workers, tc.steer), func(t *testing.T) {
			testCrashKeepsQueue(t, tc.workers, tc.steer)
		})
	}
}

func testCrashKeepsQueue(t *testing.T, workers int, steer string) {
	m := startMaster(t, "--workers", fmt.Sprint(workers), "--sockets", "master", "--steer", steer)
	ready := m.waitReady(workers)
	victim := ready[0]
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// SIGSTOP is asynchronous: until every thread has stopped, the child
	// may still accept (and then lose) a connection.
	eventually(t, 5*time.Second, "every thread of the child stopped", func() bool { return testkit.Stopped(victim) })
	_, port, _ := net.SplitHostPort(m.addr)
	var conns []net.Conn
	for range 40 {
		c, err := net.Dial("tcp", m.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("GET /whoami HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	queued := 0
	eventually(t, 5*time.Second, "connections queued on the stopped child's socket", func() bool {
		queued, _ = acceptQueued(port)
		return queued > 0
	})
	if err := killPID(victim); err != nil {
		t.Fatal(err)
	}
	served := map[int]int{}
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("connection %d (of %d, %d queued on the killed child): %v", i, len(conns), queued, err)
			continue
		}
		var w whoami
		if err := decodeJSON(resp.Body, &w); err != nil || resp.StatusCode != 200 {
			t.Errorf("connection %d: status %d, %v", i, resp.StatusCode, err)
		}
		resp.Body.Close()
		served[w.PID]++
	}
	t.Logf("%d connections queued on the killed child %d; answers by pid: %v", queued, victim, served)
	if served[victim] != 0 {
		t.Errorf("the stopped child answered %d requests", served[victim])
	}
}
