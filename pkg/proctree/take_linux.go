package proctree

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// takeTimeout bounds a whole TakeListener call. A healthy one takes about
// a millisecond (two sock_diag dumps, a walk of each process's fd table,
// three system calls); the margin is for a loaded machine and for a
// process with tens of thousands of fds. pidfd_getfd waits for the
// target's exec lock, and /proc reads for locks a process can hold, so a
// hostile or stuck child could otherwise hang the caller.
const takeTimeout = time.Second

// errStale marks a descriptor taken under the fd number the scan saw, but
// which now names another file: the child closed the listener and reused
// the number between the /proc read and pidfd_getfd.
var errStale = errors.New("the fd number now names another file")

// TakeListener finds the TCP listener on addr held by one of pids and
// returns a descriptor of it in this process (close-on-exec, owned by the
// caller), with its inode. The listeners are those that take connections
// addressed to addr (see Listeners), found with sock_diag; each pid's
// /proc/PID/fd is walked for one of them, and the first pid holding one,
// in the order given, gives it up through pidfd_open and pidfd_getfd
// (Linux 5.6). The copy is checked to have the inode the walk saw; if the
// child closed the socket and reused its fd number meanwhile, or exited,
// the whole search is made once more.
//
// Errors: ErrManyListeners if the pids hold more than one distinct
// listener on addr (listeners held only by other processes do not count);
// ErrNoListener if they hold none; ErrNotAllowed if a pid's fd table could
// not be read, or pidfd_getfd was refused (see its text for the rules).
// A pid that exits during the walk is skipped, but one that cannot be read
// fails the call, as it might hold a second listener. The call gives up
// after takeTimeout (1 s) with an error wrapping os.ErrDeadlineExceeded; a
// descriptor the abandoned search takes later is closed, not leaked.
//
// The descriptor shares the child's open file description: accept on it
// takes the child's connections, shutdown acts on the child's socket, and
// its file status flags are the child's. Do not change O_NONBLOCK (an
// os.File's Fd method sets blocking mode, the child's too). The socket
// stays open, in LISTEN and in its SO_REUSEPORT group, for as long as this
// copy is, even after the child exits: close it when the child goes.
func TakeListener(pids []int, addr netip.AddrPort) (fd int, inode uint64, err error) {
	got, err := boundedCall(takeTimeout, func() (taken, error) { return take(pids, addr, Listeners) }, taken.close)
	if err != nil {
		return -1, 0, fmt.Errorf("take listener on %s: %w", addr, err)
	}
	return got.fd, got.inode, nil
}

// TakePacket is TakeListener for UDP: it finds the unconnected UDP socket
// that takes datagrams addressed to addr (see PacketListeners) held by
// one of pids, and returns a descriptor of it in this process with its
// inode, by the same search, checks, errors (ErrNoListener,
// ErrManyListeners, ErrNotAllowed) and deadline.
//
// The copy keeps the socket bound and in its SO_REUSEPORT group after the
// child exits, and a UDP socket in a group takes its share of the
// datagrams whether anyone reads it or not: close it as soon as the child
// goes, or read it, or its share is lost.
func TakePacket(pids []int, addr netip.AddrPort) (fd int, inode uint64, err error) {
	got, err := boundedCall(takeTimeout, func() (taken, error) { return take(pids, addr, PacketListeners) }, taken.close)
	if err != nil {
		return -1, 0, fmt.Errorf("take udp socket on %s: %w", addr, err)
	}
	return got.fd, got.inode, nil
}

// taken is a descriptor TakeListener took, and its inode.
type taken struct {
	fd    int
	inode uint64
}

// close closes the descriptor.
func (t taken) close() { unix.Close(t.fd) }

// holding is where a process holds a listener: its pid, fd number, inode.
type holding struct {
	pid, fd int
	inode   uint64
}

// take is TakeListener's and TakePacket's search and take, retried once
// if what it found went away before it was taken. find lists the sockets
// on addr: Listeners or PacketListeners.
func take(pids []int, addr netip.AddrPort, find func(netip.AddrPort) ([]Listener, error)) (taken, error) {
	got, err := takeOnce(pids, addr, find)
	if retryable(err) {
		got, err = takeOnce(pids, addr, find)
	}
	return got, err
}

// takeOnce finds the socket and takes it.
func takeOnce(pids []int, addr netip.AddrPort, find func(netip.AddrPort) ([]Listener, error)) (taken, error) {
	ls, err := find(addr)
	if err != nil {
		return taken{}, err
	}
	if len(ls) == 0 {
		return taken{}, fmt.Errorf("%w: no socket on it", ErrNoListener)
	}
	h, err := findHeld(pids, inodesOf(ls))
	if err != nil {
		return taken{}, err
	}
	return getfd(h)
}

// findHeld walks the fd table of each pid and returns the first holding of
// one of the inodes. Every table is walked whole, to count the distinct
// listeners held.
func findHeld(pids []int, inodes []uint64) (holding, error) {
	var first holding
	var held []uint64 // distinct, in the order found
	var errs []error
	for _, pid := range pids {
		err := scanFds(pid, func(fd int, link []byte) bool {
			ino, ok := parseSocketLink(link)
			if !ok || !slices.Contains(inodes, ino) {
				return false
			}
			if len(held) == 0 {
				first = holding{pid: pid, fd: fd, inode: ino}
			}
			if !slices.Contains(held, ino) {
				held = append(held, ino)
			}
			return false
		})
		if err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, denied(err)))
		}
	}
	switch {
	case len(held) > 1:
		return holding{}, fmt.Errorf("%w: %d (inodes %v), one per worker process perhaps; a child is steered only through a single listener", ErrManyListeners, len(held), held)
	case len(errs) > 0:
		return holding{}, errors.Join(errs...)
	case len(held) == 0:
		return holding{}, fmt.Errorf("%w: %d listening elsewhere, none in the %d processes", ErrNoListener, len(inodes), len(pids))
	}
	return first, nil
}

// getfd copies the descriptor h names into this process, checking that it
// is still the socket h saw.
func getfd(h holding) (taken, error) {
	pidfd, err := unix.PidfdOpen(h.pid, 0)
	if err != nil {
		return taken{}, fmt.Errorf("pidfd_open of pid %d: %w", h.pid, pidfdError(err))
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, h.fd, 0) // always close-on-exec
	if err != nil {
		return taken{}, fmt.Errorf("pidfd_getfd of pid %d fd %d: %w", h.pid, h.fd, pidfdError(err))
	}
	ino, err := InodeOf(fd)
	if err != nil || ino != h.inode {
		unix.Close(fd)
		return taken{}, fmt.Errorf("pid %d fd %d, socket:[%d]: %w", h.pid, h.fd, h.inode, errStale)
	}
	return taken{fd: fd, inode: ino}, nil
}

// pidfdError explains an errno of pidfd_open or pidfd_getfd.
func pidfdError(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("kernel before 5.6 has no pidfd_getfd (pidfd_open came in 5.3): %w", err)
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("the process is gone: %w", err)
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("the process closed the fd: %w", err)
	}
	return err
}

// denied marks a refused /proc read with ErrNotAllowed: the kernel shows
// another process's fd table under the same rule as pidfd_getfd, less
// YAMA's.
func denied(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	return err
}

// retryable reports whether err means the listener found went away before
// it was taken, so that a new search may find it, or another.
func retryable(err error) bool {
	return errors.Is(err, errStale) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EBADF)
}
