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
// stops exactly those three calls and asks the master about them
// (SECCOMP_RET_USER_NOTIF): the master lets its own threads make them and
// fails everyone else's with EPERM (seccompnotif_linux.go).
//
// Why ask instead of refusing outright: a filter outlives execve. When
// the master upgrades itself it execs the new binary on the spawner's
// thread (the children's parent-death signal is tied to that thread), and
// the whole new master then runs under the filter: a filter that refused
// outright would forbid it its own steering program. Where the master
// cannot get a listener (the prctl path, a kernel before 5.5, an outer
// filter with a listener of its own), the filter refuses with EPERM
// itself, and the master says it cannot upgrade in place.
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
// threads, which attach the steering program, do not (until an upgrade,
// after which all of them have it and the master answers their calls).

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

// guardedOptions are the SOL_SOCKET options the filter stops.
var guardedOptions = []uint32{unix.SO_ATTACH_REUSEPORT_CBPF, unix.SO_ATTACH_REUSEPORT_EBPF, unix.SO_DETACH_REUSEPORT_BPF}

// What the filter does with a guarded option: ask the master through the
// listener, or refuse it itself where there is no listener.
const (
	guardAsk  = unix.SECCOMP_RET_USER_NOTIF
	guardDeny = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
)

// reuseportGuard returns the classic BPF program of the filter for goarch,
// whose guarded options get the action guarded (guardAsk or guardDeny):
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
//	deny:  ret GUARDED
//	nosys: ret ERRNO(ENOSYS)
func reuseportGuard(goarch string, guarded uint32) ([]unix.SockFilter, error) {
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
	a.stmt(unix.BPF_RET|unix.BPF_K, guarded, "deny")
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
// must be locked to its goroutine for good. It returns the filter's
// listener, whose notifications a guardAnswerer must answer from then on
// (a guarded call waits for its answer), or -1 and why there is none: the
// filter then refuses the guarded options itself, with EPERM. err says
// why no filter at all was installed.
//
// Without CAP_SYS_ADMIN the kernel accepts a filter only from a thread
// with no_new_privs set; then installGuard sets that first, on this
// thread alone, and reports nnp true: every child inherits it and cannot
// gain privileges through a setuid or setcap program. A master with
// CAP_SYS_ADMIN does not set it (though it may have it already: systemd's
// NoNewPrivileges=yes).
func installGuard() (listener int, why string, nnp bool, err error) {
	ask, err := reuseportGuard(runtime.GOARCH, guardAsk)
	if err != nil {
		return -1, "", false, err
	}
	deny, err := reuseportGuard(runtime.GOARCH, guardDeny)
	if err != nil {
		return -1, "", false, err
	}
	// install retries once with no_new_privs where the kernel asks for it.
	install := func(f func() error) error {
		err := f()
		if errors.Is(err, unix.EACCES) && !nnp {
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				return fmt.Errorf("%w: set no_new_privs: %w", errGuardPermission, err)
			}
			nnp = true
			err = f()
		}
		return err
	}
	why = listenerMissing(kernelRelease())
	if why == "" {
		listener = -1
		err = install(func() (err error) {
			listener, err = setListenerFilter(ask)
			return err
		})
		if err == nil {
			return listener, "", nnp, nil
		}
		if errors.Is(err, errGuardPermission) {
			return -1, "", nnp, fmt.Errorf("install seccomp filter: %w", err)
		}
		why = "the kernel gave the seccomp filter no listener: " + listenerError(err)
	}
	if err := install(func() error { return setFilter(deny) }); err != nil {
		return -1, "", nnp, fmt.Errorf("install seccomp filter: %w", err)
	}
	return -1, why, nnp, nil
}

// listenerError explains why seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)
// failed.
func listenerError(err error) string {
	switch {
	case errors.Is(err, unix.EBUSY):
		return "an outer filter (a container runtime's) already has one, and a thread's filters may have only one (EBUSY)"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOSYS):
		return "seccomp(2) is refused (an outer filter, systemd's SystemCallFilter=, allows only prctl)"
	case errors.Is(err, unix.EINVAL):
		return "the kernel does not know SECCOMP_FILTER_FLAG_NEW_LISTENER (EINVAL)"
	}
	return err.Error()
}

// listenerMissing says why the kernel of release cannot answer the
// guard's notifications as the master needs, or "": letting a call go on
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE) needs Linux 5.5.
func listenerMissing(release string) string {
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return "" // unknown: try, and fall back on an error
	}
	if major < 5 || major == 5 && minor < 5 {
		return fmt.Sprintf("the seccomp filter cannot let the master's own calls through on Linux %s (SECCOMP_USER_NOTIF_FLAG_CONTINUE needs 5.5)", release)
	}
	return ""
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// setListenerFilter installs prog on the calling thread with seccomp(2)
// and SECCOMP_FILTER_FLAG_NEW_LISTENER, and returns the listener
// (close-on-exec, as the kernel makes it).
func setListenerFilter(prog []unix.SockFilter) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
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
