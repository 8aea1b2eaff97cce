package proctree

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// The I/O half of the /proc readers. They call open/read/getdents directly:
// os.Open would stat each file and try to add it to Go's poller, doubling
// the system calls of a scan that runs every few tens of milliseconds.

// procPath returns "/proc/PID" followed by rest.
func procPath(pid int, rest string) string {
	return "/proc/" + strconv.Itoa(pid) + rest
}

// gone reports whether err means that the process or the file went away
// during the scan, which is normal: processes exit and close files at any
// time.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// openRead opens path read-only, retrying on EINTR.
func openRead(path string, flags int) (int, error) {
	return openReadAt(unix.AT_FDCWD, path, flags)
}

// openReadAt opens path, relative to the directory at fd dir, read-only,
// retrying on EINTR.
func openReadAt(dir int, path string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dir, path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// readFile reads the beginning of path into buf, at most len(buf) bytes,
// and returns how many it read. /proc files are generated whole, so a
// buffer larger than the file reads it all.
func readFile(path string, buf []byte) (int, error) {
	return readFileAt(unix.AT_FDCWD, path, buf)
}

// readFileAt is readFile for a path relative to the directory at fd dir.
func readFileAt(dir int, path string, buf []byte) (int, error) {
	fd, err := openReadAt(dir, path, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// scanDir calls fn with the name of each entry of the directory at path
// but "." and "..", and the directory's fd for *at calls, until fn
// returns true. It reads the directory in chunks, so a process with a
// million fds costs time, not memory.
func scanDir(path string, fn func(dir int, name string) (stop bool)) error {
	fd, err := openRead(path, unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 8<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "getdents", Path: path, Err: err}
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			if fn(fd, name) {
				return nil
			}
		}
	}
}

// scanPids calls fn with each process id in /proc, until fn returns true.
// Threads other than each process's main one are not listed there.
func scanPids(fn func(pid int) (stop bool)) error {
	return scanDir("/proc", func(_ int, name string) bool {
		pid, err := strconv.Atoi(name)
		return err == nil && fn(pid)
	})
}

// scanFds calls fn with each open fd of pid and the target of its
// /proc/PID/fd link ("socket:[123]", "anon_inode:[eventpoll]", a path cut
// to 64 bytes), until fn returns true. A fd closed during the scan is
// skipped. link is only valid during the call.
func scanFds(pid int, fn func(fd int, link []byte) (stop bool)) error {
	var buf [64]byte
	return scanDir(procPath(pid, "/fd"), func(dir int, name string) bool {
		fd, err := strconv.Atoi(name)
		if err != nil {
			return false
		}
		// Relative to the open directory: the kernel resolves one name,
		// not the four of /proc/PID/fd/N.
		n, err := unix.Readlinkat(dir, name, buf[:])
		if err != nil {
			return false // closed since the directory was read
		}
		return fn(fd, buf[:n])
	})
}

// readBounded reads path whole, or its first limit bytes, into a buffer
// that grows from 4 KiB as needed.
func readBounded(path string, limit int) ([]byte, error) {
	fd, err := openRead(path, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, min(4<<10, limit))
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), limit-len(buf)))
		}
		m, err := unix.Read(fd, buf[len(buf):min(cap(buf), limit)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		buf = buf[:len(buf)+m]
	}
	return buf, nil
}

// scanLines calls fn with each line of path, without its newline, until
// fn returns true or limit bytes have been read. A line longer than 16 KiB
// is skipped. line is only valid during the call.
func scanLines(path string, limit int, fn func(line []byte) (stop bool)) error {
	fd, err := openRead(path, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 16<<10)
	head, end, total, skipping := 0, 0, 0, false
	for total < limit {
		if head > 0 { // move the incomplete line to the front
			end = copy(buf, buf[head:end])
			head = 0
		}
		if end == len(buf) { // no newline in a full buffer
			end, skipping = 0, true
		}
		m, err := unix.Read(fd, buf[end:min(len(buf), end+limit-total)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			if end > head && !skipping {
				fn(buf[head:end])
			}
			return nil
		}
		from := end
		end += m
		total += m
		for {
			i := bytes.IndexByte(buf[from:end], '\n')
			if i < 0 {
				break
			}
			if skipping {
				skipping = false
			} else if fn(buf[head : from+i]) {
				return nil
			}
			head = from + i + 1
			from = head
		}
	}
	return nil
}
