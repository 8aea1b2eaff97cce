package steer

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// errClosed is returned by the methods of a closed Steerer.
var errClosed = errors.New("steer: steerer is closed")

// Steerer is the steering program of one reuseport group and its maps. Its
// methods are safe for concurrent use; each is one or a few map writes.
type Steerer struct {
	mu       sync.Mutex
	maxSlots int
	prog     *ebpf.Program
	maps     programMaps
	n        int
	healthy  []bool   // as in the health map
	spares   []uint32 // as in the spares map, all maxSlots entries
	closed   bool
	migrates bool // loaded to choose for migrating connections too
}

// Migrates reports whether the program also chooses where the connections
// queued on a closing listener of the group go (Linux 5.14+): then they
// move to a healthy slot, whatever net.ipv4.tcp_migrate_req says, instead
// of being reset.
func (s *Steerer) Migrates() bool { return s.migrates }

// config is the value of the config map.
type config struct {
	N      uint32 // active slots
	Spares uint32 // entries of the spares map in use
}

// Load creates the maps and loads the program for up to maxSlots slots
// (1..MaxSlots), with no slot active: it steers nothing until SetSlots,
// SetSocket and SetHealthy say otherwise, and nothing at all until Attach.
// Every error wraps ErrUnsupported and says why: no permission (CAP_BPF and
// CAP_NET_ADMIN, or root, are needed), a kernel without SK_REUSEPORT
// programs, or the verifier's last lines.
func Load(maxSlots int) (*Steerer, error) {
	if err := checkMax(maxSlots); err != nil {
		return nil, err
	}
	s := &Steerer{
		maxSlots: maxSlots,
		healthy:  make([]bool, maxSlots),
		spares:   make([]uint32, maxSlots),
	}
	if err := s.load(); err != nil {
		s.release()
		return nil, loadError(err)
	}
	return s, nil
}

// Supported returns nil when the steering program can be loaded here for
// MaxSlots slots, and otherwise Load's error.
func Supported() error {
	s, err := Load(MaxSlots)
	if err != nil {
		return err
	}
	return s.Close()
}

// load creates the maps, then the program.
func (s *Steerer) load() error {
	var err error
	newMap := func(name string, typ ebpf.MapType, value, entries uint32) *ebpf.Map {
		if err != nil {
			return nil
		}
		var m *ebpf.Map
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: value, MaxEntries: entries})
		if err != nil {
			err = fmt.Errorf("create map %s: %w", name, err)
		}
		return m
	}
	entries := uint32(s.maxSlots)
	s.maps.sockets = newMap("steer_sockets", ebpf.ReusePortSockArray, 8, entries)
	s.maps.health = newMap("steer_health", ebpf.Array, 4, entries)
	s.maps.spares = newMap("steer_spares", ebpf.Array, 4, entries)
	s.maps.config = newMap("steer_config", ebpf.Array, 8, 1)
	s.maps.runs = newMap("steer_runs", ebpf.PerCPUArray, 8, 1)
	s.maps.conns = newMap("steer_conns", ebpf.PerCPUArray, 8, entries+1)
	if err != nil {
		return err
	}
	s.maps.migrating = true
	s.prog, err = ebpf.NewProgram(s.programSpec())
	s.migrates = err == nil
	if err != nil {
		// A kernel that refuses the migrating attach type (EINVAL), or
		// one before 5.14 that does not check it and whose verifier then
		// refuses migrating_sk, past the end of its context: select
		// only, and no migrating_sk to read.
		s.maps.migrating = false
		s.prog, err = ebpf.NewProgram(s.programSpec())
	}
	if err != nil {
		return fmt.Errorf("load program: %w", err)
	}
	return nil
}

// programSpec is the program for s's maps, loaded to choose for migrating
// connections too if s.maps.migrating.
func (s *Steerer) programSpec() *ebpf.ProgramSpec {
	attach := ebpf.AttachSkReuseportSelect
	if s.maps.migrating {
		attach = ebpf.AttachSkReuseportSelectOrMigrate
	}
	return &ebpf.ProgramSpec{
		Name:         "prefork_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   attach,
		Instructions: program(s.maxSlots, s.maps),
		// The kernel reads the license only to allow GPL-only helpers;
		// the program calls none.
		License: "Proprietary",
	}
}

// loadError turns an error of load into one that says what is missing.
func loadError(err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.As(err, &verr):
		return fmt.Errorf("%w: the verifier rejected the program: %w; log ends: %s", ErrUnsupported, err, tail(verr.Log, 6))
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: no permission for BPF (needs CAP_BPF and CAP_NET_ADMIN, or root; before Linux 5.11 also RLIMIT_MEMLOCK): %w", ErrUnsupported, err)
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: kernel without SK_REUSEPORT programs (Linux 4.19+ needed): %w", ErrUnsupported, err)
	}
	return fmt.Errorf("%w: %w", ErrUnsupported, err)
}

// tail returns the last n non-empty lines of a verifier log, joined.
func tail(log []string, n int) string {
	var lines []string
	for _, l := range log {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Attach attaches the program to the reuseport group of the listening
// socket listenerFD (SO_ATTACH_REUSEPORT_EBPF), replacing any program the
// group had. It applies to the whole group, and stays when that socket is
// closed; see the package documentation.
func (s *Steerer) Attach(listenerFD int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	err := unix.SetsockoptInt(listenerFD, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD())
	switch {
	case err == nil:
		return nil
	case isMPTCP(listenerFD):
		return fmt.Errorf("steer: attach to fd %d: %s: %w", listenerFD, mptcpHint, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("steer: attach to fd %d: not a SO_REUSEPORT socket: %w", listenerFD, err)
	}
	return fmt.Errorf("steer: attach to fd %d: %w", listenerFD, err)
}

// mptcpHint explains the error of Attach and SetSocket for an MPTCP
// socket, which the kernel refuses in both.
const mptcpHint = "an MPTCP socket, and steering works on TCP and UDP sockets only " +
	"(Go listens with MPTCP by default where the kernel has it: use net.ListenConfig.SetMultipathTCP(false))"

// isMPTCP reports whether fd is an MPTCP socket. Go (1.24 and later)
// listens with IPPROTO_MPTCP by default; the kernel puts the TCP subflow
// listener that MPTCP makes in the reuseport group, with no descriptor
// that a program or a sockets array could be given.
func isMPTCP(fd int) bool {
	p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	return err == nil && p == unix.IPPROTO_MPTCP
}

// Detach removes whatever program the reuseport group of listenerFD has
// (SO_DETACH_REUSEPORT_BPF, Linux 5.3+): the kernel's hash alone decides
// again. It returns an error wrapping unix.ENOENT when there was none.
func Detach(listenerFD int) error {
	if err := unix.SetsockoptInt(listenerFD, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0); err != nil {
		return fmt.Errorf("steer: detach from fd %d: %w", listenerFD, err)
	}
	return nil
}

// SetSocket puts the listener fd in the sockets array as slot's socket,
// replacing the previous one. The socket must be a SO_REUSEPORT socket of
// the group the program is attached to, listening (TCP) or bound (UDP),
// and in no other Steerer's array. The array does not keep the socket
// open: once it is closed its entry disappears by itself.
func (s *Steerer) SetSocket(slot int, fd int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(slot); err != nil {
		return err
	}
	return s.putSocket(slot, fd)
}

// putSocket is SetSocket with s.mu held.
func (s *Steerer) putSocket(slot int, fd int) error {
	err := s.maps.sockets.Put(uint32(slot), uint64(fd))
	switch {
	case err == nil:
		return nil
	case isMPTCP(fd):
		return fmt.Errorf("steer: set slot %d socket (fd %d): %s: %w", slot, fd, mptcpHint, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("steer: set slot %d socket (fd %d): already in another steerer's array: %w", slot, fd, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("steer: set slot %d socket (fd %d): not a listening SO_REUSEPORT socket (nor a bound UDP one): %w", slot, fd, err)
	}
	return fmt.Errorf("steer: set slot %d socket (fd %d): %w", slot, fd, err)
}

// ClearSocket removes slot's socket from the array; it is no error when
// there was none. The slot's connections then go to the other healthy
// slots, even if it is still marked healthy.
func (s *Steerer) ClearSocket(slot int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(slot); err != nil {
		return err
	}
	if err := s.maps.sockets.Delete(uint32(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("steer: clear slot %d socket: %w", slot, err)
	}
	return nil
}

// SetSlots sets the number of active slots: the program chooses among
// slots 0..n-1 (0..maxSlots; 0 steers nothing). Sockets and health of the
// slots from n on are kept for when they are active again.
func (s *Steerer) SetSlots(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if n < 0 || n > s.maxSlots {
		return fmt.Errorf("steer: slots %d is out of range 0..%d", n, s.maxSlots)
	}
	s.n = n
	return s.publish()
}

// SetHealthy marks slot healthy (new connections may go to it) or not (they
// go to the other healthy slots). Every slot starts unhealthy.
func (s *Steerer) SetHealthy(slot int, healthy bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(slot); err != nil {
		return err
	}
	v := uint32(0)
	if healthy {
		v = 1
	}
	if err := s.maps.health.Put(uint32(slot), v); err != nil {
		return fmt.Errorf("steer: set slot %d health: %w", slot, err)
	}
	s.healthy[slot] = healthy
	return s.publish()
}

// check validates a slot number and that s is open.
func (s *Steerer) check(slot int) error {
	if s.closed {
		return errClosed
	}
	if slot < 0 || slot >= s.maxSlots {
		return fmt.Errorf("steer: slot %d is out of range 0..%d", slot, s.maxSlots-1)
	}
	return nil
}

// publish writes the spares list of the current n and health, entry by
// entry where it changed, then config. Health is always written before
// (see SetHealthy), so the program never selects a slot marked unhealthy
// from a stale list: it checks health again.
func (s *Steerer) publish() error {
	list := spareList(s.n, s.healthy)
	for i, slot := range list {
		if s.spares[i] == slot {
			continue
		}
		if err := s.maps.spares.Put(uint32(i), slot); err != nil {
			return fmt.Errorf("steer: write spares: %w", err)
		}
		s.spares[i] = slot
	}
	return s.writeConfig(config{N: uint32(s.n), Spares: uint32(len(list))})
}

func (s *Steerer) writeConfig(c config) error {
	if err := s.maps.config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("steer: write config: %w", err)
	}
	return nil
}

// Runs returns how many times the program has run: once for every new
// connection of a group it is attached to (and for every connection a
// closing listener hands on). A group whose connections are accepted while
// Runs stands still is not running this program: something replaced or
// detached it (see the package documentation).
func (s *Steerer) Runs() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	var perCPU []uint64
	if err := s.maps.runs.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("steer: read runs: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Connections returns, for slots 0..slots-1 (at most the maxSlots of
// Load), how many new connections the program placed in each slot's
// socket, and how many it left to the kernel's hash (unplaced: no healthy
// active slot had a socket, or no slot was active). It counts each run
// of the program, which is one per SYN of a new connection where
// bpf_sk_select_reuseport accepted the socket, so that listener gets it;
// but also a SYN the kernel then drops (the listener's accept queue is
// full: ListenOverflows), whose retry is counted again, the ACK that
// completes a SYN-cookie connection, and a stray segment of a connection
// that is gone: a count above the accepts, never below. A
// connection handed on from a closing listener was counted where it was
// first placed and is not counted again. The counts never go down while s
// is open.
func (s *Steerer) Connections(slots int) (perSlot []uint64, unplaced uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, errClosed
	}
	slots = min(max(slots, 0), s.maxSlots)
	read := func(key int) (uint64, error) {
		var perCPU []uint64
		if err := s.maps.conns.Lookup(uint32(key), &perCPU); err != nil {
			return 0, fmt.Errorf("steer: read connections of key %d: %w", key, err)
		}
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		return n, nil
	}
	perSlot = make([]uint64, slots)
	for i := range perSlot {
		if perSlot[i], err = read(i); err != nil {
			return nil, 0, err
		}
	}
	if unplaced, err = read(s.maxSlots); err != nil {
		return nil, 0, err
	}
	return perSlot, unplaced, nil
}

// Close releases the program and the maps. A group the program is still
// attached to keeps it (the kernel holds a reference), so Close first sets
// the active slots to 0: the program left behind selects nothing and the
// kernel's hash decides, as without it. Use Detach to remove it.
func (s *Steerer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.writeConfig(config{})
	return errors.Join(err, s.release())
}

// release closes whatever load created.
func (s *Steerer) release() error {
	var errs []error
	if s.prog != nil {
		errs = append(errs, s.prog.Close())
	}
	for _, m := range []*ebpf.Map{s.maps.sockets, s.maps.health, s.maps.spares, s.maps.config, s.maps.runs, s.maps.conns} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
