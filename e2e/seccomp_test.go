package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// hijackScript attaches a classic BPF program that picks socket 0 to the
// reuseport group of its fd 3 (SO_ATTACH_REUSEPORT_CBPF), writes the
// outcome ("ok" or the errno's name) to ARGV1.SLOT, then execs ARGV2, the
// reference child, which serves on the same fd 3.
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
os.execv(sys.argv[2], [sys.argv[2]])
`

// A child that tries to take over its group's spread with
// SO_ATTACH_REUSEPORT_CBPF on its fd 3 gets EPERM (the spawner's seccomp
// filter), and new connections keep going to every slot.
func TestChildCannotAttachReuseportProgram(t *testing.T) {
	const python = "/usr/bin/python3" // TRAPS 10
	if _, err := os.Stat(python); err != nil {
		t.Skip("needs " + python)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "hijack.py")
	if err := os.WriteFile(script, []byte(hijackScript), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "attach")
	const workers = 2
	m := startMaster(t, "--workers", "2", "--sockets", "master", "--drain-timeout", "2s",
		"--", python, script, out, filepath.Join(bin, "child"))
	ready := m.waitReady(workers)
	for slot, pid := range ready {
		data, err := os.ReadFile(out + "." + strconv.Itoa(slot))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(data); got != "EPERM" {
			t.Errorf("slot %d: SO_ATTACH_REUSEPORT_CBPF: %s, want EPERM", slot, got)
		}
		st := procStatus(t, pid)
		if st["Seccomp"] != "2" {
			t.Errorf("slot %d: Seccomp %q, want 2 (filter)", slot, st["Seccomp"])
		}
		if os.Geteuid() == 0 && st["NoNewPrivs"] != "0" {
			t.Errorf("slot %d: NoNewPrivs %q under a root master, want 0", slot, st["NoNewPrivs"])
		}
	}
	bySlot := map[int]int{}
	for range 40 {
		w, err := getWhoami(m.addr)
		if err != nil {
			t.Fatal(err)
		}
		bySlot[w.Slot]++
	}
	if len(bySlot) != workers {
		t.Errorf("40 new connections went to slots %v, want both", bySlot)
	}
	m.signal(syscall.SIGTERM)
	if code := m.wait(15 * time.Second); code != 0 {
		t.Errorf("master exit %d, want 0", code)
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
