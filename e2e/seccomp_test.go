package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/testkit"
)

// hijackScript attaches a classic BPF program that picks socket 0 to the
// reuseport group of its fd 3 (SO_ATTACH_REUSEPORT_CBPF), writes the
// outcome ("ok" or the errno's name) to ARGV1.SLOT, then makes an io_uring
// (through which it could make the same setsockopt), writes that outcome
// to ARGV1-uring.SLOT, then execs ARGV2, the reference child, which serves
// on the same fd 3.
const hijackScript = `
import ctypes, errno, os, socket, struct, sys
s = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)
insn = ctypes.create_string_buffer(struct.pack("@HBBI", 0x06, 0, 0, 0))  # ret #0
fprog = struct.pack("@HP", 1, ctypes.addressof(insn))
try:
    s.setsockopt(socket.SOL_SOCKET, 51, fprog)  # SO_ATTACH_REUSEPORT_CBPF
    res = "ok"
except OSError as e:
    res = errno.errorcode.get(e.errno, str(e.errno))
s.close()
with open(sys.argv[1] + "." + os.environ["PREFORK_SLOT"], "w") as f:
    f.write(res)
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params
ring = libc.syscall(ctypes.c_long(425), ctypes.c_long(1), params)  # io_uring_setup
res = "ok" if ring >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
with open(sys.argv[1] + "-uring." + os.environ["PREFORK_SLOT"], "w") as f:
    f.write(res)
os.execv(sys.argv[2], [sys.argv[2]])
`

// A child that tries to take over its group's spread with
// SO_ATTACH_REUSEPORT_CBPF on its fd 3 gets EPERM (the spawner's seccomp
// filter), one that makes an io_uring gets ENOSYS, and new connections
// keep going to every slot: under a root
// master, with steering, and under an unprivileged one (no steering),
// whose children also get no_new_privs.
func TestChildCannotAttachReuseportProgram(t *testing.T) {
	const python = "/usr/bin/python3" // TRAPS 10
	if _, err := os.Stat(python); err != nil {
		t.Skip("needs " + python)
	}
	for _, tc := range []struct {
		name       string
		privileged bool
	}{{"root", true}, {"unprivileged", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 && tc.privileged {
				t.Skip("needs root")
			}
			uid := os.Geteuid()
			sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if !tc.privileged && uid == 0 {
				uid = freeUID(t)
				sys.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
			}
			// Not t.TempDir(): its parent is private to root.
			dir, err := os.MkdirTemp("", "prefork-seccomp-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chown(dir, uid, uid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			script := filepath.Join(dir, "hijack.py")
			if err := os.WriteFile(script, []byte(hijackScript), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "attach")
			const workers = 2
			m := startMasterSys(t, testkit.FreeAddr(t), nil, sys, "--workers", "2", "--sockets", "master",
				"--drain-timeout", "2s", "--control", "", "--", python, script, out, filepath.Join(bin, "child"))
			ready := m.waitReady(workers)
			wantNNP := "0"
			if uid != 0 {
				wantNNP = "1"
			}
			for slot, pid := range ready {
				data, err := os.ReadFile(out + "." + strconv.Itoa(slot))
				if err != nil {
					t.Fatal(err)
				}
				if got := string(data); got != "EPERM" {
					t.Errorf("slot %d: SO_ATTACH_REUSEPORT_CBPF: %s, want EPERM", slot, got)
				}
				data, err = os.ReadFile(out + "-uring." + strconv.Itoa(slot))
				if err != nil {
					t.Fatal(err)
				}
				if got := string(data); got != "ENOSYS" {
					t.Errorf("slot %d: io_uring_setup: %s, want ENOSYS", slot, got)
				}
				st := procStatus(t, pid)
				if st["Seccomp"] != "2" || st["NoNewPrivs"] != wantNNP {
					t.Errorf("slot %d: Seccomp %q NoNewPrivs %q, want 2 (filter) and %s", slot, st["Seccomp"], st["NoNewPrivs"], wantNNP)
				}
			}
			// New connections reach both slots. Steering (the root
			// master's) takes a newly ready slot in at its next health
			// check, every 25 ms, so the first few may all go to one;
			// with the program hijacked, every one would, for good.
			bySlot := map[int]int{}
			deadline := time.Now().Add(10 * time.Second)
			for n := 0; len(bySlot) < workers && n < 1000 && time.Now().Before(deadline); n++ {
				w, err := getWhoami(m.addr)
				if err != nil {
					t.Fatal(err)
				}
				bySlot[w.Slot]++
			}
			if len(bySlot) != workers {
				t.Errorf("new connections went to slots %v, want both", bySlot)
			}
			m.signal(syscall.SIGTERM)
			if code := m.wait(15 * time.Second); code != 0 {
				t.Errorf("master exit %d, want 0", code)
			}
		})
	}
}

// The master's own threads are not filtered: the filter is on the
// spawner's thread alone.
func TestMasterThreadsNotFiltered(t *testing.T) {
	m := startMasterOn(t, testkit.FreeAddr(t), nil, "--workers", "1")
	m.waitReady(1)
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(m.cmd.Process.Pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	filtered := 0
	for _, task := range tasks {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(m.cmd.Process.Pid) + "/task/" + task.Name() + "/status")
		if err == nil && strings.Contains(string(data), "\nSeccomp:\t2\n") {
			filtered++
		}
	}
	if filtered != 1 {
		t.Errorf("%d of the master's %d threads have a seccomp filter, want 1 (the spawner's)", filtered, len(tasks))
	}
}

// If a group's steering program is replaced anyway (here by the test,
// which takes a child's fd 3 with pidfd_getfd and is not filtered), the
// master notices that connections are accepted that its program never saw,
// says so, and attaches it again: new connections are spread again.
func TestMasterNoticesReplacedSteering(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: steering loads a BPF program, and pidfd_getfd takes another process's fd")
	}
	m := startMaster(t, "--workers", "2", "--sockets", "master", "--steer", "on", "--drain-timeout", "2s")
	ready := m.waitReady(2)
	pidfd, err := unix.PidfdOpen(ready[1], 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	fd := groupSocketOf(t, pidfd, ready[1], m.addr)
	defer unix.Close(fd)
	ret0 := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}} // socket 0, always
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: 1, Filter: &ret0[0]}); err != nil {
		t.Fatal(err)
	}
	const msg = "the group's steering program no longer chooses where connections go: a process holding one of its sockets replaced or detached it (SO_ATTACH_REUSEPORT_*, SO_DETACH_REUSEPORT_BPF); attaching it again"
	sent, hijacked := 0, 0
	for ; len(m.lines(msg)) == 0; sent++ {
		if sent == 2000 {
			t.Fatalf("2000 connections after the program was replaced (%d to slot 0), and the master did not notice", hijacked)
		}
		w, err := getWhoami(m.addr)
		if err != nil {
			t.Fatal(err)
		}
		if w.Slot == 0 {
			hijacked++
		}
	}
	t.Logf("noticed after %d connections, %d of them to slot 0", sent, hijacked)
	bySlot := map[int]int{}
	for range 40 {
		w, err := getWhoami(m.addr)
		if err != nil {
			t.Fatal(err)
		}
		bySlot[w.Slot]++
	}
	if len(bySlot) != 2 {
		t.Errorf("after the master attached its program again, 40 connections went to slots %v, want both", bySlot)
	}
}

// groupSocketOf returns a copy (pidfd_getfd) of the listening socket on
// addr that process pid holds: the child library moves fd 3 elsewhere.
func groupSocketOf(t *testing.T, pidfd, pid int, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		n, _ := strconv.Atoi(e.Name())
		if target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name()); !strings.HasPrefix(target, "socket:") {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			t.Skipf("pidfd_getfd: %v", err)
		}
		sa, _ := unix.Getsockname(fd)
		listening, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if in4, ok := sa.(*unix.SockaddrInet4); ok && listening == 1 && strconv.Itoa(in4.Port) == port {
			return fd
		}
		unix.Close(fd)
	}
	t.Fatalf("process %d holds no listening socket on %s", pid, addr)
	return -1
}
