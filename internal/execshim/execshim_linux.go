package execshim

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ParentEnv names the environment variable that tells the shim the
// master's pid; the shim removes it.
const ParentEnv = "PREFORK_SHIM_PARENT"

// ErrUnsupported is returned by Open on an architecture without a native
// shim.
var ErrUnsupported = errors.New("execshim: no native shim for this architecture")

// minFD is the lowest descriptor number Open leaves the shim at. The
// path Open returns names a descriptor, resolved in the forked child when
// it execs: syscall.ForkExec first moves the child's descriptors into
// fd 0, 1, 2, ... and parks some above them, which must not land on the
// shim's number.
const minFD = 100

// base is where the shim's one segment is loaded.
const base = 0x400000

// Image returns the shim as an ELF executable for this architecture, or
// nil when there is none.
func Image() []byte {
	if code == nil {
		return nil
	}
	return elfImage(machine, code)
}

// elfImage wraps code in a static ELF executable: the ELF header, a
// loadable read+execute segment holding the whole file, its entry right
// after the headers, and a non-executable stack.
func elfImage(m elf.Machine, code []byte) []byte {
	const (
		ehsize = 64
		phsize = 56
		phnum  = 2
		hdrs   = ehsize + phnum*phsize
	)
	size := uint64(hdrs + len(code))
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(m), Version: uint32(elf.EV_CURRENT),
		Entry: base + hdrs, Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: phnum,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	progs := [phnum]elf.Prog64{
		{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: base, Paddr: base,
			Filesz: size, Memsz: size, Align: 0x1000},
		{Type: uint32(elf.PT_GNU_STACK), Flags: uint32(elf.PF_R | elf.PF_W), Align: 16},
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, h)
	binary.Write(&buf, binary.LittleEndian, progs)
	buf.Write(code)
	return buf.Bytes()
}

// Open puts the shim in a sealed, read-only memfd of this process, checks
// that it runs, and returns the path to exec it by: /proc/self/fd/N,
// which a child forked by this process resolves to its own copy of the
// descriptor. The descriptor is close-on-exec (the shim exec itself drops
// it) and stays open for the life of the process. Call it once.
//
// The check forks the shim with no argument and waits for that pid alone;
// a caller that reaps every child (wait4(-1)) concurrently may take the
// exit instead, which only makes the check less strict.
func Open() (string, error) {
	img := Image()
	if img == nil {
		return "", ErrUnsupported
	}
	fd, err := load(img)
	if err != nil {
		return "", fmt.Errorf("execshim: %w", err)
	}
	path := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := probe(path); err != nil {
		unix.Close(fd)
		return "", fmt.Errorf("execshim: %w", err)
	}
	return path, nil
}

// load writes img into a new memfd, seals it, and returns a read-only
// descriptor of it numbered at least minFD: a file open for writing
// cannot be executed (ETXTBSY).
func load(img []byte) (int, error) {
	w, err := memfd()
	if err != nil {
		return -1, err
	}
	defer unix.Close(w)
	for b := img; len(b) > 0; {
		n, err := unix.Write(w, b)
		if err != nil {
			return -1, fmt.Errorf("write the shim: %w", err)
		}
		b = b[n:]
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(w), unix.F_ADD_SEALS, seals); err != nil {
		return -1, fmt.Errorf("seal the shim: %w", err)
	}
	r, err := unix.Open("/proc/self/fd/"+strconv.Itoa(w), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen the shim read-only: %w", err)
	}
	defer unix.Close(r)
	fd, err := unix.FcntlInt(uintptr(r), unix.F_DUPFD_CLOEXEC, minFD)
	if err != nil {
		return -1, fmt.Errorf("move the shim to fd %d or above: %w", minFD, err)
	}
	return fd, nil
}

// memfd creates the memfd, executable: where vm.memfd_noexec is 1 a memfd
// is only executable when asked for with MFD_EXEC (Linux 6.3), which older
// kernels refuse (EINVAL); where it is 2, none is.
func memfd() (int, error) {
	const name = "prefork-exec-shim"
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	return fd, nil
}

// probe runs the shim with no argument, which exits 0: an exec refused
// (a security module, a noexec policy) fails here rather than at every
// child's start.
func probe(path string) error {
	pid, err := syscall.ForkExec(path, []string{path}, &syscall.ProcAttr{})
	if err != nil {
		return fmt.Errorf("run the shim: %w", err)
	}
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, unix.ECHILD):
		return nil // reaped by someone else; it did exec
	case err != nil:
		return fmt.Errorf("wait for the shim: %w", err)
	case !ws.Exited() || ws.ExitStatus() != 0:
		return fmt.Errorf("the shim's check ended with status %v", ws)
	}
	return nil
}
