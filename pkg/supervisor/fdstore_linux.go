package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// fdStore is the master's side of systemd's file descriptor store
// (FileDescriptorStoreMax= in the unit), for master socket mode's
// listeners, so that the connections queued on them outlive a master
// that crashed and was restarted:
//
//   - every listener the socket set binds is sent to the store
//     ("FDSTORE=1", FDNAME= its fdName, FDPOLL=0) over NOTIFY_SOCKET;
//     systemd keeps a duplicate, so the socket (one open file
//     description, with its accept queue and its place in the reuseport
//     group) lives on when the master and its children die;
//   - a listener the master closes for good while it runs (a scale-down,
//     a reload to another address or mode, a renewal by steering, a stop)
//     is removed ("FDSTOREREMOVE=1", FDNAME=): the store's copy would
//     otherwise keep it in the group, taking connections nobody accepts;
//   - a master that dies (SIGKILL, a panic, the watchdog's SIGABRT) or
//     fails to start removes nothing: systemd restarts it (Restart=)
//     with the stored descriptors (LISTEN_FDS, LISTEN_FDNAMES), and the
//     new master takes those whose name is a slot of its configuration
//     instead of binding new ones. The connections that queued meanwhile
//     are accepted by its children.
//
// FDPOLL=0: systemd drops a stored descriptor on POLLHUP, which a
// listener shows for a moment while steering moves its queue
// (shutdown, then listen again: steer.Steerer.Requeue).
//
// systemd discards the store when the service stops (systemd 254 and
// later keep it with FileDescriptorStorePreserve=yes), and the master
// removes its listeners at a stop anyway: a stopped service refuses
// connections at once rather than queuing them for a start that may not
// come. An upgrade of the master binary in place keeps the same
// descriptors, which the store already holds.
//
// Only the loop uses it once the supervisor runs; New makes it. A nil
// *fdStore is a store that holds nothing and sends nothing.
type fdStore struct {
	log *slog.Logger
	// socket is NOTIFY_SOCKET; "" when the master sends nothing.
	socket string
	// passed holds the descriptors handed back at start until sort
	// looks at them, and why says what was wrong with their names.
	passed []listenFD
	why    string
	// kept holds those of the passed descriptors that sort kept, until
	// the set takes them.
	kept map[socketKey]int
	// warned is set once a failed send was said.
	warned bool
}

// notifySendTimeout bounds one datagram to the service manager: the loop
// sends them, and must not wait on a service manager that is not reading.
const notifySendTimeout = time.Second

// openFDStore reads what systemd passed (LISTEN_PID, LISTEN_FDS,
// LISTEN_FDNAMES) and unsets those variables, so that neither the
// children nor a later exec of the master see them; sort then keeps the
// descriptors that fit the configuration. The master calls it once,
// first, before anything binds. Nil when there is no store to send to
// (NOTIFY_SOCKET) and nothing was passed.
func openFDStore(log *slog.Logger) *fdStore {
	fds, why, err := parseListenEnv(os.Getpid(), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(name)
	}
	if err != nil {
		log.Warn("ignoring the socket activation variables", "err", err)
	}
	f := &fdStore{log: log, socket: os.Getenv("NOTIFY_SOCKET"), passed: fds, why: why, kept: make(map[socketKey]int)}
	if f.socket == "" && len(fds) == 0 {
		return nil
	}
	return f
}

// sort keeps the passed descriptors that are listeners of cfg's slots
// (master socket mode, cfg.Listen, a slot below cfg.Workers, a listening
// SO_REUSEPORT TCP socket on that address), non-blocking and
// close-on-exec, for the set to take. It closes the others and removes
// their names from the store, and says in one line what it took and what
// it dropped. Only the first call does anything.
func (f *fdStore) sort(cfg Config) {
	if f == nil || len(f.passed) == 0 {
		return
	}
	var took, dropped []string
	removed := make(map[string]bool)
	for _, l := range f.passed {
		key, reason := f.fits(cfg, l)
		if reason == "" {
			f.kept[key] = l.fd
			took = append(took, l.name)
			continue
		}
		unix.Close(l.fd)
		dropped = append(dropped, l.name+": "+reason)
		// One removal per name; a name kept twice loses both copies
		// here, and the set stores the one it took again.
		if !removed[l.name] && fdNameValid(l.name) {
			removed[l.name] = true
			f.send("FDSTOREREMOVE=1\nFDNAME="+l.name, -1)
		}
	}
	args := []any{"took", took, "dropped", dropped}
	if f.why != "" {
		args = append(args, "names", f.why)
	}
	f.log.Info("sockets passed by the service manager", args...)
	f.passed, f.why = nil, ""
}

// fits says why the passed descriptor l is not a listener of cfg's,
// or "" when it is, having made it non-blocking and close-on-exec.
func (f *fdStore) fits(cfg Config, l listenFD) (socketKey, string) {
	addr, slot, err := parseFDName(l.name)
	key := socketKey{addr: addr, slot: slot}
	switch {
	case err != nil:
		return key, "not a name of prefork's"
	case cfg.Sockets != SocketsMaster:
		return key, "not in master socket mode"
	case !cfg.Listen.has(key.addr):
		return key, "not a listen address of " + cfg.Listen.String()
	case key.slot >= cfg.Workers:
		return key, fmt.Sprintf("slot %d of %d workers", key.slot, cfg.Workers)
	}
	if _, ok := f.kept[key]; ok {
		return key, "a second descriptor of the name"
	}
	if err := checkListener(l.fd, key.addr); err != nil {
		return key, err.Error()
	}
	// The set's listeners are non-blocking (heldSocket); a child's
	// server may have made the socket blocking, for all its holders.
	if err := unix.SetNonblock(l.fd, true); err != nil {
		return key, fmt.Sprintf("set O_NONBLOCK: %v", err)
	}
	unix.CloseOnExec(l.fd)
	return key, ""
}

// checkListener reports why fd is not a listening SO_REUSEPORT TCP socket
// bound to addr (for a key udp://addr: a bound SO_REUSEPORT UDP socket),
// or nil.
func checkListener(fd int, key string) error {
	type option struct {
		name       string
		level, opt int
		want       int
	}
	kind, addr := "listening SO_REUSEPORT TCP socket", key
	checks := []option{
		{"SO_TYPE", unix.SOL_SOCKET, unix.SO_TYPE, unix.SOCK_STREAM},
		{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_TCP},
		{"SO_ACCEPTCONN", unix.SOL_SOCKET, unix.SO_ACCEPTCONN, 1},
		{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
	}
	if isPacketKey(key) {
		kind, addr = "SO_REUSEPORT UDP socket", strings.TrimPrefix(key, "udp://")
		checks = []option{
			{"SO_TYPE", unix.SOL_SOCKET, unix.SO_TYPE, unix.SOCK_DGRAM},
			{"SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL, unix.IPPROTO_UDP},
			{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
		}
	}
	for _, o := range checks {
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if errors.Is(err, unix.ENOTSOCK) {
			return errors.New("not a socket")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
		if v != o.want {
			return fmt.Errorf("not a %s (%s is %d)", kind, o.name, v)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	var ip net.IP
	var port int
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = sa.Addr[:], sa.Port
	case *unix.SockaddrInet6:
		ip, port = sa.Addr[:], sa.Port
	default:
		return errors.New("not an IP socket")
	}
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", addr, err)
	}
	wildcard := want.IP == nil || want.IP.IsUnspecified()
	if port != want.Port || (wildcard && !ip.IsUnspecified()) || (!wildcard && !ip.Equal(want.IP)) {
		return fmt.Errorf("bound to %s, not %s", net.JoinHostPort(ip.String(), fmt.Sprint(port)), addr)
	}
	return nil
}

// fdNameValid reports whether systemd accepts name in FDNAME=: printable
// ASCII and space, no ':', at most 255 bytes.
func fdNameValid(name string) bool {
	if name == "" || len(name) > fdNameMax {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// take hands the set the descriptor passed at start for key, if any;
// the set owns it from then on.
func (f *fdStore) take(key socketKey) (int, bool) {
	if f == nil {
		return -1, false
	}
	fd, ok := f.kept[key]
	delete(f.kept, key)
	return fd, ok
}

// holds reports whether a descriptor passed at start for addr waits to
// be taken: the address is the master's already.
func (f *fdStore) holds(addr string) bool {
	if f == nil {
		return false
	}
	for k := range f.kept {
		if k.addr == addr {
			return true
		}
	}
	return false
}

// put sends the listener fd of key to the store.
func (f *fdStore) put(key socketKey, fd int) {
	if f == nil || f.socket == "" {
		return
	}
	name, err := fdName(key.addr, key.slot)
	if err != nil {
		f.warn(err)
		return
	}
	f.send("FDSTORE=1\nFDNAME="+name+"\nFDPOLL=0", fd)
}

// remove removes the listener of key from the store.
func (f *fdStore) remove(key socketKey) {
	if f == nil || f.socket == "" {
		return
	}
	if name, err := fdName(key.addr, key.slot); err == nil {
		f.send("FDSTOREREMOVE=1\nFDNAME="+name, -1)
	}
}

// closeKept closes the descriptors passed at start that the set never
// took (a start that failed first), leaving the store as it is.
func (f *fdStore) closeKept() {
	if f == nil {
		return
	}
	for k, fd := range f.kept {
		unix.Close(fd)
		delete(f.kept, k)
	}
	for _, l := range f.passed {
		unix.Close(l.fd)
	}
	f.passed = nil
}

// send sends state, with fd when it is not -1, to NOTIFY_SOCKET. A
// failure is said once: the master serves as well without the store.
func (f *fdStore) send(state string, fd int) {
	if f.socket == "" {
		return
	}
	if err := sendNotify(f.socket, state, fd); err != nil {
		f.warn(fmt.Errorf("%s: %w", strings.ReplaceAll(state, "\n", " "), err))
	}
}

func (f *fdStore) warn(err error) {
	if f.warned {
		f.log.Debug("could not update the service manager's fd store", "err", err)
		return
	}
	f.warned = true
	f.log.Warn("could not update the service manager's fd store; the listeners may not outlive a crash of the master, or may outlive their use", "err", err)
}

// sendNotify sends one sd_notify datagram to socket (a path, or an
// abstract name starting with '@'), with fd in SCM_RIGHTS unless fd is
// -1: go-systemd's daemon.SdNotify sends no descriptors. A blocking
// socket with a send timeout: the loop sends, and must not wait long on
// a service manager that does not read.
func sendNotify(socket, state string, fd int) error {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval(notifySendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	deadline := time.Now().Add(notifySendTimeout)
	for {
		// A send with a timeout is not restarted after a signal (the
		// runtime's preemption signals among them): EINTR.
		err = unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: socket}, 0)
		if !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send to %s: %w", socket, err)
	}
	return nil
}

// keepStored makes the set leave the fd store as it is from now on: a
// master that failed to start closes its listeners, and systemd restarts
// it with their copies and the connections queued on them.
func (s *socketSet) keepStored() {
	if s.store != nil {
		s.store.socket = ""
	}
}

// adoptedSteerWait bounds how long steering a listener taken from the
// store waits for the dead master's sockets array to let it go.
const adoptedSteerWait = 2 * time.Second

// steerAdopted puts a listener taken from the store under steering. Its
// group still runs the dead master's program, which the first Attach
// replaces; the kernel frees that program's sockets array, which still
// claims the socket (EBUSY), a little later (after an RCU grace period,
// from a work queue), so it retries for a while. Without steering, it
// detaches the dead master's program, which would otherwise go on
// steering by a state nobody updates.
func (s *socketSet) steerAdopted(addr string, slot, fd int) error {
	if !s.steer {
		// ENOPROTOOPT: a kernel before 5.3, which cannot detach.
		if err := steer.Detach(fd); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("slot %d on %s: %w", slot, addr, err)
		}
		return nil
	}
	deadline := time.Now().Add(adoptedSteerWait)
	for {
		err := s.steerSocket(addr, slot, fd)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
