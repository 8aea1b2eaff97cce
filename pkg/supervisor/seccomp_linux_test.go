package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runCBPF runs a seccomp program on a struct seccomp_data, with the few
// instructions reuseportGuard uses.
func runCBPF(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= in.K
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: code %#x not interpreted", pc, in.Code)
		}
	}
	t.Fatal("program ran off its end")
	return 0
}

// seccompData lays out struct seccomp_data, little endian.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], nr)
	binary.LittleEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

func TestReuseportGuardProgram(t *testing.T) {
	t.Parallel()
	const (
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		allow = unix.SECCOMP_RET_ALLOW
		sol   = unix.SOL_SOCKET
		cbpf  = unix.SO_ATTACH_REUSEPORT_CBPF
		ebpf  = unix.SO_ATTACH_REUSEPORT_EBPF
		det   = unix.SO_DETACH_REUSEPORT_BPF
	)
	x86, i386, a64, arm := uint32(unix.AUDIT_ARCH_X86_64), uint32(unix.AUDIT_ARCH_I386),
		uint32(unix.AUDIT_ARCH_AARCH64), uint32(unix.AUDIT_ARCH_ARM)
	for _, tc := range []struct {
		name     string
		goarch   string
		arch, nr uint32
		level    uint64
		opt      uint64
		want     uint32
	}{
		{name: "attach cbpf", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: cbpf, want: eperm},
		{name: "attach ebpf", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: ebpf, want: eperm},
		{name: "detach", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: det, want: eperm},
		{name: "upper half of level set", goarch: "amd64", arch: x86, nr: 54, level: 1<<32 | sol, opt: cbpf, want: eperm},
		{name: "upper half of optname set", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: 7<<40 | cbpf, want: eperm},
		{name: "SO_REUSEPORT", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: unix.SO_REUSEPORT, want: allow},
		{name: "SO_ATTACH_FILTER", goarch: "amd64", arch: x86, nr: 54, level: sol, opt: unix.SO_ATTACH_FILTER, want: allow},
		{name: "same number, level TCP", goarch: "amd64", arch: x86, nr: 54, level: unix.IPPROTO_TCP, opt: cbpf, want: allow},
		{name: "getsockopt", goarch: "amd64", arch: x86, nr: 55, level: sol, opt: cbpf, want: allow},
		{name: "other call", goarch: "amd64", arch: x86, nr: 41, level: sol, opt: cbpf, want: allow},
		{name: "x32", goarch: "amd64", arch: x86, nr: x32Bit | 541, level: sol, opt: cbpf, want: eperm},
		{name: "x32 bit on 54", goarch: "amd64", arch: x86, nr: x32Bit | 54, level: sol, opt: ebpf, want: eperm},
		{name: "i386 setsockopt", goarch: "amd64", arch: i386, nr: 366, level: sol, opt: cbpf, want: eperm},
		{name: "i386 54 is another call", goarch: "amd64", arch: i386, nr: 54, level: sol, opt: cbpf, want: allow},
		{name: "unknown arch", goarch: "amd64", arch: 0xc0000015, nr: 54, level: sol, opt: cbpf, want: allow},
		{name: "arm64 setsockopt", goarch: "arm64", arch: a64, nr: 208, level: sol, opt: det, want: eperm},
		{name: "arm64 SO_REUSEPORT", goarch: "arm64", arch: a64, nr: 208, level: sol, opt: unix.SO_REUSEPORT, want: allow},
		{name: "arm64 54 is another call", goarch: "arm64", arch: a64, nr: 54, level: sol, opt: cbpf, want: allow},
		{name: "arm setsockopt", goarch: "arm64", arch: arm, nr: 294, level: sol, opt: ebpf, want: eperm},
		{name: "x86-64 call on arm64", goarch: "arm64", arch: x86, nr: 54, level: sol, opt: cbpf, want: allow},
		{name: "io_uring_setup", goarch: "amd64", arch: x86, nr: 425, want: nosys},
		{name: "io_uring_enter", goarch: "amd64", arch: x86, nr: 426, want: nosys},
		{name: "io_uring_register", goarch: "amd64", arch: x86, nr: 427, want: nosys},
		{name: "call before io_uring", goarch: "amd64", arch: x86, nr: 424, want: allow},
		{name: "call after io_uring", goarch: "amd64", arch: x86, nr: 428, want: allow},
		{name: "x32 io_uring_setup", goarch: "amd64", arch: x86, nr: x32Bit | 425, want: nosys},
		{name: "x32 io_uring_register", goarch: "amd64", arch: x86, nr: x32Bit | 427, want: nosys},
		{name: "i386 io_uring_setup", goarch: "amd64", arch: i386, nr: 425, want: nosys},
		{name: "i386 io_uring_enter", goarch: "amd64", arch: i386, nr: 426, want: nosys},
		{name: "unknown arch io_uring_setup", goarch: "amd64", arch: 0xc0000015, nr: 425, want: allow},
		{name: "arm64 io_uring_setup", goarch: "arm64", arch: a64, nr: 425, want: nosys},
		{name: "arm64 io_uring_register", goarch: "arm64", arch: a64, nr: 427, want: nosys},
		{name: "arm io_uring_enter", goarch: "arm64", arch: arm, nr: 426, want: nosys},
		{name: "arm io_uring_register", goarch: "arm64", arch: arm, nr: 427, want: nosys},
		{name: "x86-64 io_uring_setup on arm64", goarch: "arm64", arch: x86, nr: 425, want: allow},
	} {
		// eperm in the table is the guarded action: the filter's own
		// refusal, or the master's answer.
		for _, guarded := range []uint32{guardDeny, guardAsk} {
			t.Run(fmt.Sprintf("%s/%#x", tc.name, guarded), func(t *testing.T) {
				prog, err := reuseportGuard(tc.goarch, guarded)
				if err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if want == eperm {
					want = guarded
				}
				got := runCBPF(t, prog, seccompData(tc.arch, tc.nr, 3, tc.level, tc.opt, 0, 4))
				if got != want {
					t.Errorf("got %#x, want %#x", got, want)
				}
			})
		}
	}
	if _, err := reuseportGuard("riscv64", guardAsk); err == nil {
		t.Error("a guard for an architecture it does not know")
	}
}

// The guard installed on one thread, with the master answering its
// listener: that thread, one of the master's own, attaches and detaches a
// reuseport program (as every thread of a master does after an upgrade in
// place); a child forked from it is refused with EPERM; io_uring_setup
// fails there with ENOSYS; the process's other threads are untouched.
// Once the answerer stops, the guarded calls fail with ENOSYS, without
// waiting.
func TestReuseportGuardKernel(t *testing.T) {
	t.Parallel()
	fd := reuseportListener(t)
	uringBefore := uringSetup()
	if uringBefore == unix.ENOSYS {
		t.Log("io_uring_setup fails with ENOSYS before the guard: its refusal shows nothing here")
	}
	logs := &logRecorder{}
	done := make(chan error, 1)
	var childPID int
	go func() {
		// Never unlocked: the thread, filtered for good, ends with this
		// goroutine.
		runtime.LockOSThread()
		done <- func() error {
			listener, why, _, err := installGuard()
			if err != nil {
				return err
			}
			if listener < 0 {
				return fmt.Errorf("no listener: %s", why)
			}
			a, err := startAnswerer(listener, slog.New(logs))
			if err != nil {
				unix.Close(listener)
				return err
			}
			defer a.stop()
			if err := attachRet0(fd); err != nil {
				return fmt.Errorf("attach cbpf on the guarded thread, answered: %w", err)
			}
			if err := rawSetsockoptInt(fd, 1<<32|unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF); err != 0 {
				return fmt.Errorf("detach with the level's upper half set, answered: %w", err)
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return fmt.Errorf("SO_REUSEPORT on the guarded thread: %w", err)
			}
			if errno := uringSetup(); errno != unix.ENOSYS {
				return fmt.Errorf("io_uring_setup on the guarded thread: %v, want ENOSYS", errno)
			}
			var got string
			if childPID, got, err = forkAttacher(fd); err != nil {
				return err
			}
			if got != "EPERM" {
				return fmt.Errorf("a child of the guarded thread attaching cbpf: %s, want EPERM", got)
			}
			a.stop()
			if err := attachRet0(fd); !errors.Is(err, unix.ENOSYS) {
				return fmt.Errorf("attach cbpf once the answerer stopped: %v, want ENOSYS", err)
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// This goroutine never ran on the guarded thread: it was locked.
	if err := attachRet0(fd); err != nil {
		t.Fatalf("attach cbpf on another thread: %v", err)
	}
	if errno := uringSetup(); errno != uringBefore {
		t.Errorf("io_uring_setup on another thread: %v, want %v as before the guard", errno, uringBefore)
	}
	said := logs.lines("refused processes' calls to replace or remove the steering program")
	if len(said) != 1 {
		t.Fatalf("%d lines on the refusal, want 1", len(said))
	}
	if got, want := attr(said[0], "by_pid").String(), fmt.Sprintf("%d=1", childPID); got != want {
		t.Errorf("by_pid %q, want %q", got, want)
	}
}

// attachRet0 attaches to fd's reuseport group a classic BPF program that
// always picks socket 0.
func attachRet0(fd int) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: 1, Filter: &prog[0]})
}

// uringSetup makes an io_uring of one entry and closes it: 0, or the
// errno of io_uring_setup.
func uringSetup() unix.Errno {
	var params [120]byte // struct io_uring_params, zeroed
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	if errno == 0 {
		unix.Close(int(fd))
	}
	return errno
}

func reuseportListener(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	return fd
}

// rawSetsockoptInt calls setsockopt with a level of 64 bits, as a hostile
// program can.
func rawSetsockoptInt(fd int, level uint64, opt int) unix.Errno {
	v := int32(0)
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v)), 4, 0)
	return errno
}

// Where an outer filter refuses seccomp(2) with EPERM (systemd's
// @system-service), the guard goes in through prctl(2), without a
// listener: it refuses the guarded calls itself, and says why.
func TestReuseportGuardThroughPrctl(t *testing.T) {
	t.Parallel()
	fd := reuseportListener(t)
	var a bpfAsm
	a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNR, "")
	a.jeq(unix.SYS_SECCOMP, "", "allow", "")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM), "")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW, "allow")
	outer, err := a.assemble()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends filtered
		done <- func() error {
			if err := setFilter(outer); err != nil {
				return fmt.Errorf("outer filter: %w", err)
			}
			if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, 0); errno != unix.EPERM {
				return fmt.Errorf("seccomp(2) under the outer filter: %v, want EPERM", errno)
			}
			listener, why, _, err := installGuard()
			if err != nil {
				return err
			}
			if listener >= 0 || !strings.Contains(why, "seccomp(2) is refused") {
				return fmt.Errorf("listener %d, why %q: want none, as seccomp(2) is refused", listener, why)
			}
			if err := rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF); err != unix.EPERM {
				return fmt.Errorf("detach on the guarded thread: %v, want EPERM", err)
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Under an outer filter that has a listener (a container runtime's), the
// kernel gives the guard none (EBUSY): the guard refuses by itself, and
// says why.
func TestReuseportGuardUnderOuterListener(t *testing.T) {
	t.Parallel()
	fd := reuseportListener(t)
	allow := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends filtered
		done <- func() error {
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				return err
			}
			outer, err := setListenerFilter(allow)
			if err != nil {
				return fmt.Errorf("outer filter: %w", err)
			}
			defer unix.Close(outer)
			listener, why, _, err := installGuard()
			if err != nil {
				return err
			}
			if listener >= 0 || !strings.Contains(why, "EBUSY") {
				return fmt.Errorf("listener %d, why %q: want none, EBUSY", listener, why)
			}
			if err := attachRet0(fd); !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("attach on the guarded thread: %v, want EPERM", err)
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestListenerMissing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		release string
		missing bool
	}{
		{"4.19.0-26-amd64", true},
		{"5.4.0-150-generic", true},
		{"5.5.0", false},
		{"5.15.0-91-generic", false},
		{"6.18.44-fc-v1045", false},
		{"", false}, // unknown: try
		{"weird", false},
	} {
		if got := listenerMissing(tc.release) != ""; got != tc.missing {
			t.Errorf("%q: missing %v, want %v", tc.release, got, tc.missing)
		}
	}
}

// Refusals are said at once, then at most once per interval, summed by
// caller, and what is left when the answerer stops.
func TestRefusalsSaid(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	log := slog.New(logs)
	const msg = "refused processes' calls"
	r := refusals{every: time.Minute}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, pending := r.due(t0); pending {
		t.Fatal("pending before any refusal")
	}
	r.add(-5) // outside the pid namespace (0 here), or gone: said as is
	r.say(log, t0, false)
	r.add(-5)
	r.add(-5)
	r.add(-7)
	if wait, pending := r.due(t0.Add(time.Second)); !pending || wait != 59*time.Second {
		t.Errorf("due %v %v, want 59s", wait, pending)
	}
	r.say(log, t0.Add(time.Second), false) // too soon
	r.say(log, t0.Add(time.Minute), false)
	r.add(-7)
	r.say(log, t0.Add(time.Minute+time.Second), true) // the answerer stops
	said := logs.lines(msg)
	var got []string
	for _, l := range said {
		got = append(got, fmt.Sprintf("%d %s", attr(l, "calls").Int64(), attr(l, "by_pid").String()))
	}
	want := []string{"1 -5=1", "3 -5=2 -7=1", "1 -7=1"}
	if !slices.Equal(got, want) {
		t.Errorf("said %q, want %q", got, want)
	}
}

func TestFormatCounts(t *testing.T) {
	t.Parallel()
	counts := map[int]int{}
	for pid := 1; pid <= 10; pid++ {
		counts[100+pid] = pid
	}
	want := "110=10 109=9 108=8 107=7 106=6 105=5 104=4 103=3 others=3"
	if got := formatCounts(counts); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// An answerer whose filter no task uses any more (the listener hangs up)
// waits for its stop, instead of polling in a loop.
func TestAnswererIdleWhenFilterUnused(t *testing.T) {
	t.Parallel()
	listener := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread, and its filter's use, end
		fd, _, _, _ := installGuard()
		listener <- fd
	}()
	fd := <-listener
	if fd < 0 {
		t.Skip("no seccomp listener here")
	}
	a, err := startAnswerer(fd, slog.New(slog.DiscardHandler))
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := a.rounds.Load(); n > 2 {
		t.Errorf("the answerer polled %d times with nothing to answer", n)
	}
	a.stop()
	a.stop() // twice is fine
}
