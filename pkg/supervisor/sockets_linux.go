package supervisor

import (
	"fmt"
	"strings"

	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// socketSet holds the listeners of master socket mode: one SO_REUSEPORT
// listener per (address, slot), kept for as long as any generation or child
// uses it, so that the queue of a slot whose child is replaced survives the
// replacement. The master never accepts on them, so it holds them as bare
// descriptors that nothing polls: a net.Listener would sit in Go's
// netpoller, and every incoming connection would wake the master for
// nothing.
type socketSet struct {
	m map[socketKey]*heldSocket
	// steer makes the set steer every group it binds (--steer), with one
	// steering program per address.
	steer    bool
	steerers map[string]*steer.Steerer
	// reserved holds the addresses of child socket mode for the
	// children's uid (reserve_linux.go), by address.
	reserved map[string]*reservation
	// reserve, set by the supervisor, keeps the reservations in step
	// with the generations each time listeners are released: a reload's
	// commit or rollback, a scale. Nil: none.
	reserve func()
	// retire, set by the supervisor, is called with a steering program
	// just before it is closed, to keep its counts. Nil: none.
	retire func(*steer.Steerer)
	// store, set by the supervisor, is systemd's file descriptor store
	// (fdstore_linux.go): every listener bound goes to it, every one
	// closed for good leaves it, and the listeners it passed at start
	// are taken instead of bound. Nil: none.
	store *fdStore
}

type socketKey struct {
	addr string
	slot int
}

// heldSocket is one listener. Its descriptor is non-blocking: the
// children get it as fd 3 (ForkExec dups it, sharing the open file
// description and its O_NONBLOCK, which Go's net.FileListener expects,
// TRAPS 5); a child's server that switches it to blocking switches it
// for the slot's later children too, but not for the master, which never
// waits on it. The set owns it and closes it exactly once, with
// unix.Close; it is never wrapped in an *os.File, whose finalizer would
// be a second owner (TRAPS 4).
type heldSocket struct {
	fd int
}

// close closes the descriptor; a second call does nothing.
func (h *heldSocket) close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

func newSocketSet() *socketSet {
	return &socketSet{m: make(map[socketKey]*heldSocket), steerers: make(map[string]*steer.Steerer),
		reserved: make(map[string]*reservation)}
}

// ensure binds the sockets of slots 0..n-1 of every listener that are
// missing.
func (s *socketSet) ensure(listen Listeners, n int) error {
	for _, l := range listen {
		for i := range n {
			if _, err := s.fd(l.key(), i); err != nil {
				return err
			}
		}
	}
	return nil
}

// bindKey binds the socket of a listener's key: a TCP listener, or a
// bound UDP socket for udp://.
func bindKey(key string) (int, error) {
	if addr, ok := strings.CutPrefix(key, "udp://"); ok {
		return sockopt.ListenPacketFD(addr)
	}
	return sockopt.ListenFD(key)
}

// isPacketKey reports whether key is a UDP listener's.
func isPacketKey(key string) bool { return strings.HasPrefix(key, "udp://") }

// has reports whether the set holds a listener on addr.
func (s *socketSet) has(addr string) bool {
	for k := range s.m {
		if k.addr == addr {
			return true
		}
	}
	return false
}

// fd returns the descriptor of the listener of slot on addr, binding it if
// needed. The set keeps owning it: the caller passes it on (to ForkExec,
// which dups it into the child) and never closes it.
func (s *socketSet) fd(addr string, slot int) (int, error) {
	key := socketKey{addr: addr, slot: slot}
	if h, ok := s.m[key]; ok {
		return h.fd, nil
	}
	// A reservation of another uid's (child mode with --user, before a
	// reload to master mode) would refuse the master's own listener; the
	// master's listeners hold the address from now on.
	s.unreserveOthers(addr)
	fd, stored := s.store.take(key)
	if !stored {
		var err error
		if fd, err = bindKey(addr); err != nil {
			return -1, fmt.Errorf("bind slot %d on %s: %w", slot, addr, err)
		}
	}
	h := &heldSocket{fd: fd}
	var err error
	switch {
	case stored:
		err = s.steerAdopted(addr, slot, fd)
	case s.steer:
		err = s.steerSocket(addr, slot, fd)
	}
	if err != nil {
		h.close()
		return -1, err
	}
	s.m[key] = h
	s.store.put(key, fd)
	return fd, nil
}

// steerSocket puts a new listener under addr's steering program, loading
// and attaching it with the group's first socket.
func (s *socketSet) steerSocket(addr string, slot, fd int) error {
	st, ok := s.steerers[addr]
	if !ok {
		var err error
		if st, err = steer.Load(MaxWorkers); err != nil {
			return fmt.Errorf("steer %s: %w", addr, err)
		}
		if err := st.Attach(fd); err != nil {
			st.Close()
			return fmt.Errorf("steer %s: %w", addr, err)
		}
		s.steerers[addr] = st
	}
	if err := st.SetSocket(slot, fd); err != nil {
		return fmt.Errorf("steer slot %d on %s: %w", slot, addr, err)
	}
	return nil
}

// renew replaces the listener of slot on addr with a fresh one, when the
// group's steering program migrates: closing the old one then hands the
// connections queued on it to the group's healthy slots instead of
// leaving them to wait for the slot's next child. It reports whether it
// did.
func (s *socketSet) renew(addr string, slot int) (bool, error) {
	key := socketKey{addr: addr, slot: slot}
	old, ok := s.m[key]
	st := s.steerers[addr]
	if !ok || st == nil || !st.Migrates() {
		return false, nil
	}
	// The new socket joins the group before the old one leaves it: with
	// no other socket, the old queue would have nowhere to go, and the
	// group (with its program) would end. In the fd store, which keeps
	// one listener per name, the old one gives the name up first; it
	// leaves the group once systemd has closed its copy too.
	delete(s.m, key)
	s.store.remove(key)
	if _, err := s.fd(addr, slot); err != nil {
		s.m[key] = old
		s.store.put(key, old.fd)
		return false, err
	}
	old.close()
	return true, nil
}

// steerer returns the steering program of addr's group, or nil.
func (s *socketSet) steerer(addr string) *steer.Steerer { return s.steerers[addr] }

// acceptQueue returns how many connections wait in the accept queue of
// the listener of slot on addr.
func (s *socketSet) acceptQueue(addr string, slot int) (uint32, bool) {
	h, ok := s.m[socketKey{addr: addr, slot: slot}]
	if !ok {
		return 0, false
	}
	q, _, err := sockopt.AcceptQueue(h.fd)
	return q, err == nil
}

// release closes the listeners for which inUse is false, then brings
// the reservations in step.
func (s *socketSet) release(inUse func(addr string, slot int) bool) {
	s.releaseListeners(inUse)
	if s.reserve != nil {
		s.reserve()
	}
}

func (s *socketSet) releaseListeners(inUse func(addr string, slot int) bool) {
	for k, h := range s.m {
		if !inUse(k.addr, k.slot) {
			if st := s.steerers[k.addr]; st != nil {
				st.ClearSocket(k.slot)
			}
			s.store.remove(k)
			h.close()
			delete(s.m, k)
		}
	}
	for addr, st := range s.steerers {
		if !s.has(addr) {
			// A UDP group's program counts datagrams, which are no
			// connections.
			if s.retire != nil && !isPacketKey(addr) {
				s.retire(st)
			}
			st.Close()
			delete(s.steerers, addr)
		}
	}
}

// closeAll closes every listener and reservation, and removes the
// listeners from the fd store: the master closes them for good (a stop).
func (s *socketSet) closeAll() {
	s.releaseListeners(func(string, int) bool { return false })
	s.keepReserved(nil)
	s.store.closeKept()
}

// inode returns the inode of the listener of slot on addr, if the set
// holds one: the metrics find its accept queue by it.
func (s *socketSet) inode(addr string, slot int) uint64 {
	h, ok := s.m[socketKey{addr: addr, slot: slot}]
	if !ok {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(h.fd, &st); err != nil {
		return 0
	}
	return st.Ino
}

// requeue moves the connections queued on the listener of slot on addr
// to the group's other listeners, and puts it back in the group
// (steer.Steerer.Requeue). It reports how many were queued.
func (s *socketSet) requeue(addr string, slot int) (uint32, error) {
	h, ok := s.m[socketKey{addr: addr, slot: slot}]
	st := s.steerers[addr]
	if !ok || st == nil {
		return 0, fmt.Errorf("requeue slot %d on %s: no steered listener", slot, addr)
	}
	return st.Requeue(slot, h.fd)
}
