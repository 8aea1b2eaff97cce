package proctree

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// archModes are the helper's ways of waiting that only x86-64 has: the
// system calls that arm64 leaves to libc.
func archModes() map[string]waitMode {
	return map[string]waitMode{
		"accept": func(fd int, ready func()) error {
			ready()
			return retry(func() error {
				_, _, e := unix.Syscall(unix.SYS_ACCEPT, uintptr(fd), 0, 0)
				return errnoErr(e)
			})
		},
		"poll": func(fd int, ready func()) error {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			ready()
			return retry(func() error {
				_, _, e := unix.Syscall(unix.SYS_POLL, uintptr(unsafe.Pointer(&fds[0])), 1, ^uintptr(0))
				return errnoErr(e)
			})
		},
		"select": func(fd int, ready func()) error {
			ready()
			return retry(func() error {
				var set unix.FdSet
				set.Set(fd)
				_, _, e := unix.Syscall6(unix.SYS_SELECT, uintptr(fd+1), uintptr(unsafe.Pointer(&set)), 0, 0, 0, 0)
				return errnoErr(e)
			})
		},
	}
}

// errnoErr turns a raw system call's errno into an error, nil for none.
func errnoErr(e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}
