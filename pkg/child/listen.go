package child

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/sockopt"
)

// Variables of the systemd socket-activation protocol (sd_listen_fds(3)).
const (
	envListenFDs     = "LISTEN_FDS"
	envListenPID     = "LISTEN_PID"
	envListenFDNames = "LISTEN_FDNAMES"
)

// envCountersFD names the inherited descriptor of the master's counters
// page (docs/socket-modes.md, "The child contract"; package counters has
// its layout).
const envCountersFD = "PREFORK_COUNTERS_FD"

// listenFD is SD_LISTEN_FDS_START, the first inherited listener.
const listenFD = 3

// fallbackAddr is bound when neither socket activation nor PREFORK_LISTEN
// names a socket, so the binary also runs on its own.
const fallbackAddr = "127.0.0.1:8080"

// NamedListener describes one listener of the child, as Listeners
// returns it.
type NamedListener struct {
	// Name is the listener's name in PREFORK_LISTENERS (or
	// LISTEN_FDNAMES); "default" for the one listener of a child given
	// no names.
	Name string
	// Network is "tcp" for a stream listener (take it with ListenNamed),
	// "udp" for a datagram one (ListenPacket), or "" for an inherited
	// descriptor that is neither; taking it returns the error.
	Network string
}

// Listen returns the child's first listener, which must be a stream one
// (a UDP first listener is an error: take it with ListenPacket). It is
// ListenNamed of the first name in PREFORK_LISTENERS; with one listener,
// as under a master given a single --listen, it is: the socket inherited
// as fd 3 when LISTEN_FDS=1 and LISTEN_PID is this process; else
// PREFORK_LISTEN bound with SO_REUSEPORT; else 127.0.0.1:8080. ctx bounds
// binding only.
//
// The first call of Listen, ListenNamed, ListenPacket or Listeners reads
// the environment, once for the process (see Listeners), and maps the
// counters page of PREFORK_COUNTERS_FD: every connection accepted is
// then counted on it (one atomic add, no syscall). A malformed variable
// is an error of every call; a page that cannot be mapped is not: the
// child then serves without counting, and its counts read as 0.
func Listen(ctx context.Context) (net.Listener, error) {
	return listeners.listenFirst(ctx)
}

// ListenNamed returns the stream listener called name, counting its
// accepts on the counters page. A name can be taken once: a second call
// for it is an error, as are an unknown name (the error lists those
// known) and a UDP listener (take it with ListenPacket). An inherited
// descriptor must be a listening stream socket. ctx bounds binding only.
func ListenNamed(ctx context.Context, name string) (net.Listener, error) {
	return listeners.listenNamed(ctx, name)
}

// ListenPacket returns the UDP listener called name, or the first UDP
// listener when name is "". Its dynamic type is *PacketConn, which
// counts every datagram read on the counters page. As for ListenNamed, a
// name can be taken once, an unknown name is an error, and so is a
// stream listener. An inherited descriptor must be a datagram socket; a
// bound one gets SO_REUSEPORT (and not SO_REUSEADDR, which for UDP lets
// another user's socket share the address), so the children of every
// generation share it. ctx bounds binding only.
func ListenPacket(ctx context.Context, name string) (net.PacketConn, error) {
	pc, err := listeners.listenPacket(ctx, name)
	if err != nil {
		return nil, err // a nil interface, not a nil *PacketConn
	}
	return pc, nil
}

// Listeners returns the child's listeners in order, the order of their
// counters: PREFORK_LISTENERS; when it is unset, LISTEN_FDNAMES for a
// socket-activated process; else the one listener "default"
// (PREFORK_LISTEN, or 127.0.0.1:8080).
//
// The environment is read once for the process, whatever the caller:
// under socket activation for this process, every inherited descriptor
// (3 to 3+LISTEN_FDS-1) is made close-on-exec and LISTEN_FDS,
// LISTEN_PID and LISTEN_FDNAMES are unset, as sd_listen_fds(3) does, so
// no process the child starts claims them; PREFORK_COUNTERS_FD is
// unset too. LISTEN_* for another pid is ignored and left alone. A
// mismatch (LISTEN_FDS against LISTEN_FDNAMES or PREFORK_LISTENERS, a
// listener without its PREFORK_LISTEN_<NAME> when the child binds) is an
// error naming the listener, returned by every call.
func Listeners() ([]NamedListener, error) {
	return listeners.list()
}

// listeners is the process's table: the environment, the inherited
// descriptors and the counters page belong to the process, so every
// caller shares it. Tests replace it (useFreshListeners).
var listeners = newListenerSet(os.LookupEnv, os.Getpid())

// listenerSet is the listener table of one process, read once.
type listenerSet struct {
	lookup lookupFunc
	pid    int

	once    sync.Once
	err     error             // of the read; returned by every call
	entries []entry           // in counter order; read-only once read
	counter *counters.Counter // nil without a page

	mu    sync.Mutex
	taken []bool // taken[i]: entries[i] was taken; guarded by mu
}

// entry is one listener of the table.
type entry struct {
	spec
	index int   // its counter, its place in the order
	err   error // reading an inherited descriptor's type failed
}

// newListenerSet reads the environment through lookup, for process pid,
// at its first use.
func newListenerSet(lookup lookupFunc, pid int) *listenerSet {
	return &listenerSet{lookup: lookup, pid: pid}
}

// load reads the table once; concurrent callers wait for the first.
func (s *listenerSet) load() error {
	s.once.Do(func() { s.err = s.init() })
	return s.err
}

// init parses the table, claims the inherited descriptors, and maps the
// counters page.
func (s *listenerSet) init() error {
	tab, err := parseListeners(s.lookup, s.pid)
	if tab.activated {
		// Ours even if the rest is wrong: keep them from any process
		// this one starts, as sd_listen_fds(1) does.
		for fd := listenFD; fd < listenFD+tab.inherited; fd++ {
			closeOnExec(fd)
		}
		err = errors.Join(err, unsetActivation())
	}
	if err != nil {
		return err
	}
	countersFD, hasCounters, err := countersSource(s.lookup)
	if err != nil {
		return err
	}
	if hasCounters {
		s.counter = openCounter(countersFD)
	}
	s.entries = make([]entry, len(tab.specs))
	s.taken = make([]bool, len(tab.specs))
	for i, sp := range tab.specs {
		e := entry{spec: sp, index: i}
		if sp.fd >= 0 {
			// The socket's type decides, whatever the address said.
			switch network, err := socketNetwork(sp.fd); {
			case err != nil:
				e.network, e.err = "", fmt.Errorf("inherited fd %d: %w", sp.fd, err)
			case network != "": // "" off Linux: the address's hint stays
				e.network = network
			}
		}
		s.entries[i] = e
	}
	return nil
}

// list is Listeners.
func (s *listenerSet) list() ([]NamedListener, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	out := make([]NamedListener, len(s.entries))
	for i, e := range s.entries {
		out[i] = NamedListener{Name: e.name, Network: e.network}
	}
	return out, nil
}

// listenFirst is Listen.
func (s *listenerSet) listenFirst(ctx context.Context) (net.Listener, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	return s.listenStream(ctx, &s.entries[0])
}

// listenNamed is ListenNamed.
func (s *listenerSet) listenNamed(ctx context.Context, name string) (net.Listener, error) {
	e, err := s.find(name)
	if err != nil {
		return nil, err
	}
	return s.listenStream(ctx, e)
}

// listenPacket is ListenPacket.
func (s *listenerSet) listenPacket(ctx context.Context, name string) (*PacketConn, error) {
	var e *entry
	var err error
	if name == "" {
		e, err = s.firstUDP()
	} else {
		e, err = s.find(name)
	}
	if err != nil {
		return nil, err
	}
	if e.network == netTCP {
		return nil, fmt.Errorf("listener %q is a stream listener: take it with ListenNamed", e.name)
	}
	if err := s.claim(e); err != nil {
		return nil, err
	}
	var uc *net.UDPConn
	if e.fd >= 0 {
		uc, err = inheritPacketConn(e.fd)
	} else {
		uc, err = bindPacketConn(ctx, e.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", e.name, err)
	}
	return &PacketConn{UDPConn: uc, counter: s.counter, index: e.index}, nil
}

// listenStream takes e as a stream listener.
func (s *listenerSet) listenStream(ctx context.Context, e *entry) (net.Listener, error) {
	if e.network == netUDP {
		return nil, fmt.Errorf("listener %q is a UDP listener: take it with ListenPacket", e.name)
	}
	if err := s.claim(e); err != nil {
		return nil, err
	}
	var ln net.Listener
	var err error
	if e.fd >= 0 {
		ln, err = inheritListener(e.fd)
	} else {
		ln, err = bindListener(ctx, e.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", e.name, err)
	}
	return &countingListener{Listener: ln, counter: s.counter, index: e.index}, nil
}

// find returns the entry called name.
func (s *listenerSet) find(name string) (*entry, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	for i := range s.entries {
		if s.entries[i].name == name {
			return &s.entries[i], nil
		}
	}
	return nil, fmt.Errorf("no listener %q (listeners: %s)", name, s.names())
}

// firstUDP returns the first UDP entry.
func (s *listenerSet) firstUDP() (*entry, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	for i := range s.entries {
		if s.entries[i].network == netUDP {
			return &s.entries[i], nil
		}
	}
	return nil, fmt.Errorf("no UDP listener (listeners: %s)", s.names())
}

// names lists the table's names for an error.
func (s *listenerSet) names() string {
	names := make([]string, len(s.entries))
	for i, e := range s.entries {
		names[i] = e.name
	}
	return strings.Join(names, ", ")
}

// claim marks e taken, or says it already was. A failed take uses the
// name up too: an inherited descriptor is closed either way.
func (s *listenerSet) claim(e *entry) error {
	if e.err != nil {
		return fmt.Errorf("listener %q: %w", e.name, e.err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[e.index] {
		return fmt.Errorf("listener %q already taken: each listener can be taken once", e.name)
	}
	s.taken[e.index] = true
	return nil
}

// countersSource reads PREFORK_COUNTERS_FD; unset or empty means no page.
func countersSource(lookup lookupFunc) (fd int, ok bool, err error) {
	s, ok := nonEmpty(lookup, envCountersFD)
	if !ok {
		return 0, false, nil
	}
	fd, err = strconv.Atoi(s)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %w", envCountersFD, err)
	}
	if fd < 0 {
		return 0, false, fmt.Errorf("parse %s=%q: must not be negative", envCountersFD, s)
	}
	return fd, true, nil
}

// openCounter maps the counters page at fd and unsets
// PREFORK_COUNTERS_FD. It returns nil when the page cannot be mapped (fd
// is then left alone: it may be something else).
func openCounter(fd int) *counters.Counter {
	_ = os.Unsetenv(envCountersFD) // fails only for an invalid name
	c, err := counters.OpenCounter(fd)
	if err != nil {
		return nil
	}
	return c
}

// inheritListener takes over fd, a listening stream socket.
func inheritListener(fd int) (net.Listener, error) {
	if err := checkListening(fd); err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
	ln, err := net.FileListener(f) // a duplicate, close-on-exec
	if cerr := closeInherited(f); err == nil && cerr != nil {
		ln.Close()
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", fd, err)
	}
	return ln, nil
}

// inheritPacketConn takes over fd, a UDP socket.
func inheritPacketConn(fd int) (*net.UDPConn, error) {
	if err := checkDatagram(fd); err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
	pc, err := net.FilePacketConn(f) // a duplicate, close-on-exec
	if cerr := closeInherited(f); err == nil && cerr != nil {
		pc.Close()
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", fd, err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("inherited fd %d: a %T, not a UDP socket", fd, pc)
	}
	return uc, nil
}

// closeInherited closes an inherited descriptor once Go holds its
// duplicate. Close it through its *os.File, never by number: the File's
// finalizer would later close whatever reused the number, such as an
// accepted connection (TRAPS 4). Never call f.Fd() either: it would
// switch the socket, which the master shares, to blocking (TRAPS 5).
func closeInherited(f *os.File) error {
	if err := f.Close(); err != nil {
		return fmt.Errorf("close inherited %s: %w", f.Name(), err)
	}
	return nil
}

// unsetActivation removes the LISTEN_* variables once they are read, as
// sd_listen_fds(1) does, so a process this child starts claims nothing.
func unsetActivation() error {
	var errs []error
	for _, name := range []string{envListenFDs, envListenPID, envListenFDNames} {
		if err := os.Unsetenv(name); err != nil {
			errs = append(errs, fmt.Errorf("unset %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// bindListener binds addr with SO_REUSEADDR and SO_REUSEPORT.
func bindListener(ctx context.Context, addr string) (net.Listener, error) {
	ln, err := sockopt.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	return ln, nil
}

// bindPacketConn binds UDP addr with SO_REUSEPORT, and without
// SO_REUSEADDR, which for UDP would let a socket of any user share the
// group and take its share of the datagrams (sockopt.PacketControl).
func bindPacketConn(ctx context.Context, addr string) (*net.UDPConn, error) {
	pc, err := sockopt.ListenPacket(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	return pc.(*net.UDPConn), nil // what "udp" always makes
}

// countingListener counts every accepted connection on the counters
// page as listener index's; counter is nil when there is no page.
type countingListener struct {
	net.Listener
	counter *counters.Counter
	index   int
}

// Accept accepts a connection and counts it.
func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.counter != nil {
		l.counter.Accept(l.index)
	}
	return c, err
}
