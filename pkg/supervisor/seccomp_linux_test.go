package supervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"
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
		t.Run(tc.name, func(t *testing.T) {
			prog, err := reuseportGuard(tc.goarch)
			if err != nil {
				t.Fatal(err)
			}
			got := runCBPF(t, prog, seccompData(tc.arch, tc.nr, 3, tc.level, tc.opt, 0, 4))
			if got != tc.want {
				t.Errorf("got %#x, want %#x", got, tc.want)
			}
		})
	}
	if _, err := reuseportGuard("riscv64"); err == nil {
		t.Error("a guard for an architecture it does not know")
	}
}

// The guard installed on one thread: setsockopt(SO_ATTACH_REUSEPORT_CBPF)
// fails there with EPERM, other options work, io_uring_setup fails with
// ENOSYS, and the process's other threads are untouched.
func TestReuseportGuardKernel(t *testing.T) {
	t.Parallel()
	fd := reuseportListener(t)
	uringBefore := uringSetup()
	if uringBefore == unix.ENOSYS {
		t.Log("io_uring_setup fails with ENOSYS before the guard: its refusal shows nothing here")
	}
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}} // always socket 0
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, filtered for good, ends with this
		// goroutine.
		runtime.LockOSThread()
		done <- func() error {
			if _, err := installGuard(); err != nil {
				return err
			}
			if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
				&unix.SockFprog{Len: 1, Filter: &prog[0]}); !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("attach cbpf on the guarded thread: %v, want EPERM", err)
			}
			if err := rawSetsockoptInt(fd, 1<<32|unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF); err != unix.EPERM {
				return fmt.Errorf("detach with the level's upper half set: %v, want EPERM", err)
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return fmt.Errorf("SO_REUSEPORT on the guarded thread: %w", err)
			}
			if errno := uringSetup(); errno != unix.ENOSYS {
				return fmt.Errorf("io_uring_setup on the guarded thread: %v, want ENOSYS", errno)
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// This goroutine never ran on the guarded thread: it was locked.
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: 1, Filter: &prog[0]}); err != nil {
		t.Fatalf("attach cbpf on another thread: %v", err)
	}
	if errno := uringSetup(); errno != uringBefore {
		t.Errorf("io_uring_setup on another thread: %v, want %v as before the guard", errno, uringBefore)
	}
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
// @system-service), the guard goes in through prctl(2).
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
			if _, err := installGuard(); err != nil {
				return err
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
