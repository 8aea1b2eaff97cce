package proctree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// maxEpollFdinfo bounds the read of one epoll set's fdinfo: about
	// 10,000 registered files at ~90 bytes a line.
	maxEpollFdinfo = 1 << 20
	// maxPollfds bounds the pollfd array read from a process's memory.
	maxPollfds = 1024
	// eventpollLink is how /proc/PID/fd names an epoll instance.
	eventpollLink = "anon_inode:[eventpoll]"
)

// waitKind says how a blocked system call's arguments name the files it
// waits on.
type waitKind int

const (
	waitNone   waitKind = iota
	waitAccept          // accept, accept4: the fd is arg0
	waitRead            // read, recvfrom, recvmsg, recvmmsg: the fd is arg0
	waitPoll            // poll, ppoll: arg0 points to arg1 struct pollfd
	waitSelect          // select, pselect6: arg0 is nfds, arg1 points to the read fd_set
)

// WaitsOn reports whether one of pids waits for connections or datagrams
// on the socket with the given inode (see InodeOf), held under any fd
// number: the socket is registered for EPOLLIN in one of the process's
// epoll sets, or one of its threads is blocked in accept or accept4 on it,
// in read, recvfrom, recvmsg or recvmmsg on it (a UDP socket; on a TCP
// listener these fail at once, never block), in poll or ppoll with it in
// the array (for POLLIN), or in select or pselect6 with it in the read
// set. A registration counts even while no thread is in epoll_wait:
// it is how an event loop says it will accept. A process that does not
// hold the socket costs one walk of its fd table and is not looked into
// further.
//
// Each process gets 500 ms at most (bounded_linux.go), so a process that
// blocks the reads slows a call down by that much, never forever; its
// error wraps os.ErrDeadlineExceeded. A pid that exits meanwhile is
// skipped; an error is returned only if no pid waits and some could not be
// inspected (a master that is neither root nor the owner cannot read
// another user's /proc/PID/syscall).
func WaitsOn(pids []int, inode uint64) (bool, error) {
	var errs []error
	for _, pid := range pids {
		ok, err := bounded(inspectTimeout, func() (bool, error) { return waitsOne(pid, inode) })
		if ok {
			return true, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("waits on socket:[%d]: %w", inode, errors.Join(errs...))
	}
	return false, nil
}

// waitsOne is WaitsOn for one process.
func waitsOne(pid int, inode uint64) (bool, error) {
	var held, epolls []int
	err := scanFds(pid, func(fd int, link []byte) bool {
		if ino, ok := parseSocketLink(link); ok && ino == inode {
			held = append(held, fd)
		} else if string(link) == eventpollLink {
			epolls = append(epolls, fd)
		}
		return false
	})
	if err != nil || len(held) == 0 {
		return false, ignoreGone(err)
	}
	var errs []error
	for _, ep := range epolls {
		ok, err := epollWatches(pid, ep, inode)
		if ok {
			return true, nil
		}
		if err = ignoreGone(err); err != nil {
			errs = append(errs, err)
		}
	}
	ok, err := threadWaits(pid, held)
	if ok {
		return true, nil
	}
	if err = ignoreGone(err); err != nil {
		errs = append(errs, err)
	}
	return false, errors.Join(errs...)
}

// epollWatches reports whether the epoll set at fd epfd of pid has the
// socket with the given inode registered for EPOLLIN. An entry whose
// EPOLLIN is off (masked, or spent by EPOLLONESHOT) does not count.
func epollWatches(pid, epfd int, inode uint64) (bool, error) {
	dev, devKnown := sockfsDev()
	found := false
	err := scanLines(procPath(pid, fmt.Sprintf("/fdinfo/%d", epfd)), maxEpollFdinfo, func(line []byte) bool {
		e, ok := parseEpollLine(line)
		found = ok && e.ino == inode && e.events&unix.EPOLLIN != 0 &&
			(!e.hasDev || !devKnown || e.sdev == dev)
		return found
	})
	return found, err
}

// sockfsDev is the device of sockfs, the filesystem of every socket inode,
// in fdinfo's encoding: an epoll entry with the right inode number on
// another filesystem (a tty, a device) is not the socket.
var sockfsDev = sync.OnceValues(func() (uint32, bool) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0, false
	}
	return kernelDev(unix.Major(st.Dev), unix.Minor(st.Dev)), true
})

// threadWaits reports whether a thread of pid is blocked in a system call
// that waits for a connection on one of the fds held.
func threadWaits(pid int, held []int) (bool, error) {
	mem := lazyMem{pid: pid}
	defer mem.close()
	found := false
	var firstErr error
	var buf [256]byte // the longest line is about 180 bytes
	err := scanDir(procPath(pid, "/task"), func(dir int, tid string) bool {
		n, err := readFileAt(dir, tid+"/syscall", buf[:])
		if err != nil {
			if !gone(err) && firstErr == nil {
				firstErr = err
			}
			return false
		}
		c, in, err := parseSyscall(buf[:n])
		if err != nil || !in {
			return false
		}
		found = callWaits(&mem, c, held)
		return found
	})
	switch {
	case found:
		return true, nil
	case err != nil:
		return false, err
	case firstErr != nil:
		return false, firstErr
	}
	return false, mem.err
}

// callWaits reports whether the blocked call c waits for a connection on
// one of the fds held.
func callWaits(mem *lazyMem, c blockedCall, held []int) bool {
	switch waitCalls[c.nr] {
	case waitAccept, waitRead:
		return slices.Contains(held, int(int32(c.args[0])))
	case waitPoll:
		n := min(c.args[1], maxPollfds)
		buf := make([]byte, n*sizeofPollfd)
		return pollWatches(buf[:mem.read(buf, c.args[0])], held)
	case waitSelect:
		for _, fd := range held {
			offset, mask := fdSetWord(fd)
			var word [8]byte
			if c.args[1] != 0 && uint64(fd) < c.args[0] &&
				mem.read(word[:], c.args[1]+uint64(offset)) == len(word) &&
				binary.NativeEndian.Uint64(word[:])&mask != 0 {
				return true
			}
		}
	}
	return false
}

// lazyMem reads a process's memory through /proc/PID/mem, opened on the
// first read.
type lazyMem struct {
	pid    int
	opened bool  // an open was tried
	fd     int   // -1 if it failed
	err    error // why it failed, unless the process is gone
}

// read reads len(buf) bytes at addr into buf, and returns how many it
// could: 0 for an address that is not mapped, or a process gone.
func (m *lazyMem) read(buf []byte, addr uint64) int {
	if !m.opened {
		m.opened = true
		fd, err := openRead(procPath(m.pid, "/mem"), 0)
		if err != nil {
			fd, m.err = -1, ignoreGone(err)
		}
		m.fd = fd
	}
	if m.fd < 0 || addr > math.MaxInt64-uint64(len(buf)) || len(buf) == 0 {
		return 0
	}
	for {
		n, err := unix.Pread(m.fd, buf, int64(addr))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0
		}
		return n
	}
}

// close closes the memory file if it was opened.
func (m *lazyMem) close() {
	if m.opened && m.fd >= 0 {
		unix.Close(m.fd)
	}
}

// ignoreGone returns nil for the errors of a process or file that went
// away, err otherwise.
func ignoreGone(err error) error {
	if gone(err) {
		return nil
	}
	return err
}
