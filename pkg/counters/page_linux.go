package counters

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memfdName shows in /proc/PID/fd and /proc/PID/maps.
const memfdName = "prefork-counters"

// seals forbid resizing the page, and adding or removing seals later.
const seals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// NewPage creates a zeroed counter page: a memfd (close-on-exec) of one
// memory page, sealed against shrinking and growing, mapped MAP_SHARED.
func NewPage() (*Page, error) {
	if !littleEndian {
		return nil, ErrBigEndian
	}
	fd, err := unix.MemfdCreate(memfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("counter page: memfd_create: %w", err)
	}
	mem, err := sizeAndMap(fd, os.Getpagesize())
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("counter page: %w", err)
	}
	return &Page{fd: fd, mem: mem, w: layout(mem)}, nil
}

// sizeAndMap truncates fd to size, seals it and maps it read-write.
func sizeAndMap(fd, size int) ([]byte, error) {
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return nil, fmt.Errorf("add seals: %w", err)
	}
	return mapShared(fd, size)
}

// mapShared maps size bytes of fd MAP_SHARED, read-write.
func mapShared(fd, size int) ([]byte, error) {
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return mem, nil
}

// layout views mem, at least MinSize bytes, as the page's words; mem
// starts a page, so it is 8-byte aligned.
func layout(mem []byte) *words {
	return (*words)(unsafe.Pointer(&mem[0]))
}

// Close unmaps the page and closes its memfd. A second Close, or Close of
// a nil Page, does nothing.
func (p *Page) Close() error {
	if p == nil || p.fd < 0 {
		return nil
	}
	p.w = nil
	err := unix.Munmap(p.mem)
	p.mem = nil
	cerr := unix.Close(p.fd)
	p.fd = -1
	if err != nil {
		return fmt.Errorf("counter page: munmap: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("counter page: close: %w", cerr)
	}
	return nil
}

// OpenCounter maps the counter page inherited as fd, MAP_SHARED, and
// then closes fd, which the mapping no longer needs; fd must not be
// wrapped by an *os.File (TRAPS 4). On error fd is left open, since it
// may not be the page at all (a wrong number in the environment).
func OpenCounter(fd int) (*Counter, error) {
	if !littleEndian {
		return nil, ErrBigEndian
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("counter fd %d: fstat: %w", fd, err)
	}
	if st.Size < MinSize {
		return nil, fmt.Errorf("counter fd %d: %d bytes: %w", fd, st.Size, ErrTooSmall)
	}
	mem, err := mapShared(fd, int(min(st.Size, int64(os.Getpagesize()))))
	if err != nil {
		return nil, fmt.Errorf("counter fd %d: %w", fd, err)
	}
	// Linux releases fd even when close reports an error, and the
	// mapping stays valid either way, so an error here changes nothing.
	_ = unix.Close(fd)
	return &Counter{mem: mem, w: layout(mem)}, nil
}

// Close unmaps the page. A second Close does nothing.
func (c *Counter) Close() error {
	if c.mem == nil {
		return nil
	}
	err := unix.Munmap(c.mem)
	c.mem, c.w = nil, nil
	if err != nil {
		return fmt.Errorf("counter: munmap: %w", err)
	}
	return nil
}

// AdoptPage takes over the memfd of a Page that an earlier master made
// and handed on across an exec of itself (a master upgrade): it maps fd
// MAP_SHARED read-write and owns it from then on, close-on-exec again. On
// error fd is left open, as OpenCounter leaves it.
func AdoptPage(fd int) (*Page, error) {
	if !littleEndian {
		return nil, ErrBigEndian
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("counter page %d: fstat: %w", fd, err)
	}
	if st.Size < MinSize {
		return nil, fmt.Errorf("counter page %d: %d bytes: %w", fd, st.Size, ErrTooSmall)
	}
	mem, err := mapShared(fd, int(min(st.Size, int64(os.Getpagesize()))))
	if err != nil {
		return nil, fmt.Errorf("counter page %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return &Page{fd: fd, mem: mem, w: layout(mem)}, nil
}
