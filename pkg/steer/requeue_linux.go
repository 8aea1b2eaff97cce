package steer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// Requeue moves the connections waiting in the accept queue of fd, slot's
// listener, to the group's healthy slots, then puts fd back in the group
// and in the sockets array: the rescue of a slot whose child stopped
// accepting (stopped, deadlocked) while its listener is kept for the
// slot's next child. Mark the slot unhealthy first, so that no new
// connection goes to it meanwhile. moved is the queue's length read just
// before the move; see the package documentation for what moves and what
// does not.
//
// It does, with s locked: shutdown(fd, SHUT_RD), which hands every queued
// established connection to the listener the program selects (a healthy
// slot), as a close would; listen(fd, backlog) with the backlog fd had,
// which puts it back in the group, at its end; then SetSocket(slot, fd).
//
// It refuses, doing nothing, unless fd is a TCP listener (a UDP socket
// has no accept queue, and nothing hands its receive buffer on), the
// program migrates (Migrates; else the error wraps ErrNotMigrating:
// shutdown would reset the queue), fd is the socket slot has in the array,
// and another healthy active slot has a socket there to take the queue. An error after the shutdown wraps
// ErrListenerLost when fd is out of the group (listen failed, or the
// socket was bound to port 0 and listens on a new port now): close it and
// make the slot a new listener.
func (s *Steerer) Requeue(slot, fd int) (moved uint32, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(slot); err != nil {
		return 0, err
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("steer: requeue slot %d (fd %d): "+format, append([]any{slot, fd}, a...)...)
	}
	// lost says the listener is out of its group, for good.
	lost := func(format string, a ...any) error {
		return fmt.Errorf("%w: requeue slot %d (fd %d): "+format+"; close it and give the slot a new listener",
			append([]any{ErrListenerLost, slot, fd}, a...)...)
	}
	if err := isStream(fd); err != nil {
		return 0, fail("nothing done: %w", err)
	}
	if !s.migrates {
		return 0, fmt.Errorf("%w: requeue slot %d (fd %d) refused, nothing done: shutting the listener down would reset its queue",
			ErrNotMigrating, slot, fd)
	}
	if err := s.isSocket(slot, fd); err != nil {
		return 0, fail("nothing done: %w", err)
	}
	if !s.hasTarget(slot) {
		return 0, fail("nothing done: no other healthy active slot has a socket to take the queue (it would be reset, or stay stuck)")
	}
	queued, backlog, err := sockopt.AcceptQueue(fd)
	if err != nil {
		return 0, fail("nothing done: %w", err)
	}
	port, err := localPort(fd)
	if err != nil {
		return 0, fail("nothing done: %w", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
		return 0, fail("shutdown, nothing moved, the socket is unchanged: %w", err)
	}
	if err := unix.Listen(fd, int(backlog)); err != nil {
		return queued, lost("listen again after the queue moved: %w", err)
	}
	now, err := localPort(fd)
	if err != nil {
		return queued, lost("after listen again: %w", err)
	}
	if now != port {
		return queued, lost("it listens on port %d now, not %d (it was bound to port 0, so shutdown released the port)", now, port)
	}
	if err := s.putSocket(slot, fd); err != nil {
		return queued, fail("the socket is back in the group, but not in the array, so the program cannot select it (retry SetSocket, or replace it): %w", err)
	}
	return queued, nil
}

// isStream checks that fd is a stream (TCP) socket: only a TCP listener
// has a queue that shutdown hands on. On a UDP socket, shutdown would
// only stop its reads, and AcceptQueue fail with a less helpful error.
func isStream(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("type of fd %d: %w", fd, err)
	}
	if typ != unix.SOCK_STREAM {
		return fmt.Errorf("fd %d is not a TCP listener (socket type %d): a UDP socket has no accept queue to move", fd, typ)
	}
	return nil
}

// isSocket checks that fd is the socket slot has in the array, by its
// cookie (what a lookup of the array returns).
func (s *Steerer) isSocket(slot, fd int) error {
	var inArray uint64
	err := s.maps.sockets.Lookup(uint32(slot), &inArray)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("slot %d has no socket in the array (SetSocket it first)", slot)
	}
	if err != nil {
		return fmt.Errorf("read slot %d socket: %w", slot, err)
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return fmt.Errorf("cookie of fd %d: %w", fd, err)
	}
	if cookie != inArray {
		return fmt.Errorf("fd %d is not the socket slot %d has in the array", fd, slot)
	}
	return nil
}

// hasTarget reports whether a healthy active slot other than slot has a
// socket in the array: one listener at least that the program selects
// for the queue. The array drops a socket when it is closed.
func (s *Steerer) hasTarget(slot int) bool {
	for _, other := range spareList(s.n, s.healthy) {
		var cookie uint64
		if int(other) != slot && s.maps.sockets.Lookup(other, &cookie) == nil {
			return true
		}
	}
	return false
}

// localPort returns the port fd is bound to.
func localPort(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port, nil
	case *unix.SockaddrInet6:
		return a.Port, nil
	}
	return 0, fmt.Errorf("getsockname: not an IPv4 or IPv6 socket (%T)", sa)
}
