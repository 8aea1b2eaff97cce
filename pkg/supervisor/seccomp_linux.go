package supervisor

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reuseport guard is a seccomp filter that keeps the children from
// changing how the kernel spreads connections over a reuseport group: any
// member of the group (a child's fd 3 in master socket mode, its own
// listener in child mode) can attach a program to the whole group with
// setsockopt(SO_ATTACH_REUSEPORT_CBPF or _EBPF), replacing the master's
// steering program, or remove it with SO_DETACH_REUSEPORT_BPF. The filter
// makes exactly those three calls fail with EPERM.
//
// io_uring can make the same setsockopt without the system call
// (IORING_OP_URING_CMD with SOCKET_URING_OP_SETSOCKOPT, Linux 6.7 and
// later), and a filter never sees what a ring does. So the filter also
// refuses io_uring_setup, io_uring_enter and io_uring_register, with
// ENOSYS: a program then falls back as on a kernel without io_uring (as
// in a container under Docker's default seccomp profile, which blocks
// io_uring too). Every other system call and every other socket option is
// allowed.
//
// Seccomp filters belong to a thread and pass to whatever it forks and
// execs. The spawner's thread forks every child and never runs any other
// goroutine, so the filter is installed on that thread alone (no
// SECCOMP_FILTER_FLAG_TSYNC): every child has it, and the master's own
// threads, which attach the steering program, do not.

// guardArch describes the system calls of one architecture the filter
// recognises, by its AUDIT_ARCH value.
type guardArch struct {
	audit uint32
	// setsockopt lists the numbers of setsockopt, after the x32 bit is
	// cleared (amd64: 54, and x32's own 541).
	setsockopt []uint32
}

// guardArches returns the architectures the filter checks on GOARCH
// goarch: the native one and the 32-bit one its kernel also runs
// (i386 programs on x86-64, arm programs on arm64). A system call of any
// other architecture is allowed: its numbers are not these.
func guardArches(goarch string) ([]guardArch, error) {
	switch goarch {
	case "amd64":
		return []guardArch{
			{audit: unix.AUDIT_ARCH_X86_64, setsockopt: []uint32{54, 541}},
			// i386 also reaches setsockopt through socketcall(2): a
			// filter sees its call number, not the level and option,
			// which are in memory, so refusing it would refuse every
			// setsockopt. It is allowed: see docs/steering.md.
			{audit: unix.AUDIT_ARCH_I386, setsockopt: []uint32{366}},
		}, nil
	case "arm64":
		return []guardArch{
			{audit: unix.AUDIT_ARCH_AARCH64, setsockopt: []uint32{208}},
			{audit: unix.AUDIT_ARCH_ARM, setsockopt: []uint32{294}},
		}, nil
	}
	return nil, fmt.Errorf("no reuseport guard for %s", goarch)
}

// Offsets in struct seccomp_data: nr, arch, instruction_pointer, then six
// 64-bit arguments. The filter reads the low 32 bits of an argument (the
// first word, little endian): setsockopt's level and optname are ints, and
// the kernel ignores whatever a caller puts in the upper half of the
// register, so comparing all 64 bits would let a caller slip past.
const (
	seccompNR   = 0
	seccompArch = 4
	x32Bit      = 0x40000000
)

func seccompArgLow(i uint32) uint32 { return 16 + 8*i }

// uringCalls are io_uring_setup, io_uring_enter and io_uring_register,
// which the filter refuses with ENOSYS: the same numbers on every
// architecture it knows (x32's have the x32 bit, which it clears).
var uringCalls = []uint32{unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER}

// guardedOptions are the SOL_SOCKET options the filter refuses.
var guardedOptions = []uint32{unix.SO_ATTACH_REUSEPORT_CBPF, unix.SO_ATTACH_REUSEPORT_EBPF, unix.SO_DETACH_REUSEPORT_BPF}

// reuseportGuard returns the classic BPF program of the filter for goarch:
//
//	       ld  arch
//	arch0: jeq ARCH0, 0, arch1      one block per architecture
//	       ld  nr; (amd64: and ^x32 bit)
//	       jeq SETSOCKOPT, options  each number of setsockopt
//	       jeq IO_URING_*, nosys    each io_uring call, the last
//	                                jumping to allow if not equal
//	arch1: ...
//	options:
//	       ld  level; jeq SOL_SOCKET, 0, allow
//	       ld  optname; jeq each guarded option, deny
//	allow: ret ALLOW
//	deny:  ret ERRNO(EPERM)
//	nosys: ret ERRNO(ENOSYS)
func reuseportGuard(goarch string) ([]unix.SockFilter, error) {
	arches, err := guardArches(goarch)
	if err != nil {
		return nil, err
	}
	var a bpfAsm
	ld := func(off uint32) { a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off, "") }
	ld(seccompArch)
	for i, arch := range arches {
		next := "allow"
		if i+1 < len(arches) {
			next = fmt.Sprintf("arch%d", i+1)
		}
		a.jeq(arch.audit, "", next, fmt.Sprintf("arch%d", i))
		ld(seccompNR)
		if goarch == "amd64" {
			// x32 programs call with this bit set, and their own numbers.
			a.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, ^uint32(x32Bit), "")
		}
		for _, nr := range arch.setsockopt {
			a.jeq(nr, "options", "", "")
		}
		for j, nr := range uringCalls {
			f := ""
			if j == len(uringCalls)-1 {
				f = "allow"
			}
			a.jeq(nr, "nosys", f, "")
		}
	}
	ld(seccompArgLow(1))
	a.labels["options"] = len(a.prog) - 1
	a.jeq(unix.SOL_SOCKET, "", "allow", "")
	ld(seccompArgLow(2))
	for i, opt := range guardedOptions {
		f := ""
		if i == len(guardedOptions)-1 {
			f = "allow"
		}
		a.jeq(opt, "deny", f, "")
	}
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW, "allow")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM), "deny")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS), "nosys")
	return a.assemble()
}

// bpfAsm assembles a classic BPF program whose jumps name their targets;
// "" is the next instruction.
type bpfAsm struct {
	prog   []unix.SockFilter
	jumps  map[int][2]string // instruction index: true and false targets
	labels map[string]int
}

func (a *bpfAsm) stmt(code uint16, k uint32, label string) {
	if a.labels == nil {
		a.labels, a.jumps = map[string]int{}, map[int][2]string{}
	}
	if label != "" {
		a.labels[label] = len(a.prog)
	}
	a.prog = append(a.prog, unix.SockFilter{Code: code, K: k})
}

func (a *bpfAsm) jeq(k uint32, jt, jf, label string) {
	a.stmt(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, k, label)
	a.jumps[len(a.prog)-1] = [2]string{jt, jf}
}

// assemble resolves the jumps: classic BPF jumps only forward, by at most
// 255 instructions.
func (a *bpfAsm) assemble() ([]unix.SockFilter, error) {
	for i, targets := range a.jumps {
		var off [2]uint8
		for k, target := range targets {
			if target == "" {
				continue
			}
			to, ok := a.labels[target]
			if !ok || to <= i || to-i-1 > 255 {
				return nil, fmt.Errorf("seccomp filter: bad jump from %d to %q", i, target)
			}
			off[k] = uint8(to - i - 1)
		}
		a.prog[i].Jt, a.prog[i].Jf = off[0], off[1]
	}
	return a.prog, nil
}

// errGuardPermission is installGuard's error when the thread may not
// install a filter: it lacks CAP_SYS_ADMIN and no_new_privs is not set.
var errGuardPermission = errors.New("seccomp needs CAP_SYS_ADMIN or no_new_privs")

// installGuard installs the reuseport guard on the calling thread, which
// must be locked to its goroutine for good. Without CAP_SYS_ADMIN the
// kernel accepts a filter only from a thread with no_new_privs set; then
// it sets that first, on this thread alone, and reports nnp true: every
// child inherits it and cannot gain privileges through a setuid or
// setcap program. A master with CAP_SYS_ADMIN does not set it (though
// it may have it already: systemd's NoNewPrivileges=yes).
func installGuard() (nnp bool, err error) {
	prog, err := reuseportGuard(runtime.GOARCH)
	if err != nil {
		return false, err
	}
	err = setFilter(prog)
	if errors.Is(err, unix.EACCES) {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return false, fmt.Errorf("%w: set no_new_privs: %w", errGuardPermission, err)
		}
		nnp = true
		err = setFilter(prog)
	}
	if err != nil {
		return nnp, fmt.Errorf("install seccomp filter: %w", err)
	}
	return nnp, nil
}

// setFilter installs prog on the calling thread with seccomp(2), or with
// prctl(2) where that is missing (before Linux 3.17) or refused: systemd's
// SystemCallFilter=@system-service, with SystemCallErrorNumber=EPERM,
// allows prctl but not seccomp.
func setFilter(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	if errno == unix.ENOSYS || errno == unix.EPERM {
		_, _, errno = unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER,
			uintptr(unsafe.Pointer(&fprog)), 0, 0, 0)
	}
	runtime.KeepAlive(prog)
	if errno != 0 {
		return errno
	}
	return nil
}
