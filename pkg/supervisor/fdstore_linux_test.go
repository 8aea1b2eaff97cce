package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// storeStandIn is the service manager's end of the fd store for a test:
// a unix datagram socket that receives sd_notify messages and the
// descriptors they carry.
type storeStandIn struct {
	t    *testing.T
	conn *net.UnixConn
	path string
}

// storeMsg is one datagram: its text and the inodes of its descriptors,
// which the stand-in closes.
type storeMsg struct {
	state  string
	inodes []uint64
}

func newStoreStandIn(t *testing.T) *storeStandIn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &storeStandIn{t: t, conn: conn, path: path}
}

// next returns the next datagram, failing the test after a second.
func (s *storeStandIn) next() storeMsg {
	s.t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	s.conn.SetReadDeadline(time.Now().Add(time.Second))
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		s.t.Fatalf("no datagram: %v", err)
	}
	m := storeMsg{state: string(buf[:n])}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range cmsgs {
		fds, err := unix.ParseUnixRights(&c)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, fd := range fds {
			m.inodes = append(m.inodes, inodeOf(s.t, fd))
			unix.Close(fd)
		}
	}
	return m
}

// none checks that nothing more was sent.
func (s *storeStandIn) none() {
	s.t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := s.conn.Read(buf); err == nil {
		s.t.Errorf("unexpected datagram %q", buf[:n])
	}
}

func inodeOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return st.Ino
}

// freeLoopback returns a loopback address with a port free at the time.
func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// listenerFD binds a listener on addr as the socket set does; the test
// closes it.
func listenerFD(t *testing.T, addr string) int {
	t.Helper()
	fd, err := sockopt.ListenFD(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// logTo returns a JSON logger writing into buf.
func logTo(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestCheckListener(t *testing.T) {
	addr := freeLoopback(t)
	_, port, _ := net.SplitHostPort(addr)
	good := listenerFD(t, addr)
	_, wildPort, _ := net.SplitHostPort(freeLoopback(t))
	wildAddr := ":" + wildPort
	wild := listenerFD(t, wildAddr)
	raw := func(typ int, reuse, listen bool) int {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if reuse {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		if listen {
			if err := unix.Listen(fd, 8); err != nil {
				t.Fatal(err)
			}
		}
		return fd
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pipe[0]); unix.Close(pipe[1]) })
	unixFD, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(unixFD) })

	for _, tt := range []struct {
		name string
		fd   int
		addr string
		want string // in the error; "" for none
	}{
		{name: "listener", fd: good, addr: addr},
		{name: "listener, address by name", fd: good, addr: "127.0.0.1:" + port},
		{name: "wildcard", fd: wild, addr: wildAddr},
		{name: "wildcard, spelt 0.0.0.0", fd: wild, addr: "0.0.0.0" + wildAddr},
		{name: "another port", fd: good, addr: "127.0.0.1:1", want: "bound to 127.0.0.1:" + port},
		{name: "not the wildcard", fd: good, addr: ":" + port, want: "bound to"},
		{name: "not that address", fd: wild, addr: "127.0.0.1" + wildAddr, want: "bound to"},
		{name: "no SO_REUSEPORT", fd: raw(unix.SOCK_STREAM, false, true), addr: addr, want: "SO_REUSEPORT is 0"},
		{name: "not listening", fd: raw(unix.SOCK_STREAM, true, false), addr: addr, want: "SO_ACCEPTCONN is 0"},
		{name: "UDP", fd: raw(unix.SOCK_DGRAM, true, false), addr: addr, want: "SO_TYPE"},
		{name: "unix socket", fd: unixFD, addr: addr, want: "SO_PROTOCOL"},
		{name: "pipe", fd: pipe[0], addr: addr, want: "not a socket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkListener(tt.fd, tt.addr)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("checkListener: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("checkListener = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// The set sends every listener it binds to the store, under its name,
// and removes each one it closes for good; after keepStored it leaves the
// store alone.
func TestSocketSetStoresListeners(t *testing.T) {
	si := newStoreStandIn(t)
	addr := freeLoopback(t)
	s := newSocketSet()
	s.store = &fdStore{log: slog.New(slog.DiscardHandler), socket: si.path, kept: map[socketKey]int{}}
	defer s.closeAll()
	if err := s.ensure(tcpListen(addr), 3); err != nil {
		t.Fatal(err)
	}
	for slot := range 3 {
		m := si.next()
		name, _ := fdName(addr, slot)
		if want := "FDSTORE=1\nFDNAME=" + name + "\nFDPOLL=0"; m.state != want {
			t.Errorf("datagram %q, want %q", m.state, want)
		}
		if len(m.inodes) != 1 || m.inodes[0] != s.inode(addr, slot) {
			t.Errorf("slot %d: sent inodes %v, want the listener's %d", slot, m.inodes, s.inode(addr, slot))
		}
	}
	s.ensure(tcpListen(addr), 3) // held already: nothing sent again
	si.none()

	s.release(func(_ string, slot int) bool { return slot < 2 })
	name2, _ := fdName(addr, 2)
	if m := si.next(); m.state != "FDSTOREREMOVE=1\nFDNAME="+name2 || len(m.inodes) != 0 {
		t.Errorf("after releasing slot 2: %+v", m)
	}
	s.keepStored()
	s.closeAll()
	si.none()
}

// A listener passed at start is taken instead of bound, under steering
// like a new one, and stored again (systemd keeps one copy of a socket).
func TestSocketSetTakesStored(t *testing.T) {
	si := newStoreStandIn(t)
	addr := freeLoopback(t)
	passed, err := sockopt.ListenFD(addr)
	if err != nil {
		t.Fatal(err)
	}
	ino := inodeOf(t, passed)
	s := newSocketSet()
	s.store = &fdStore{log: slog.New(slog.DiscardHandler), socket: si.path,
		kept: map[socketKey]int{{addr: addr, slot: 0}: passed}}
	defer s.closeAll()
	if !s.store.holds(addr) || s.store.holds("127.0.0.1:1") {
		t.Error("holds: wrong answer")
	}
	if err := s.ensure(tcpListen(addr), 2); err != nil {
		t.Fatal(err)
	}
	if fd, _ := s.fd(addr, 0); fd != passed {
		t.Errorf("slot 0 has fd %d, want the passed %d", fd, passed)
	}
	if s.inode(addr, 1) == ino {
		t.Error("slot 1 got the passed listener")
	}
	if m := si.next(); len(m.inodes) != 1 || m.inodes[0] != ino {
		t.Errorf("slot 0 stored as %+v, want inode %d", m, ino)
	}
	if m := si.next(); len(m.inodes) != 1 || m.inodes[0] != s.inode(addr, 1) {
		t.Errorf("slot 1 stored as %+v", m)
	}
	if s.store.holds(addr) {
		t.Error("the passed listener is still waiting after ensure")
	}
}

// At start the master keeps the passed listeners of its slots and closes
// the others, removing their names from the store, and says so once.
func TestFDStoreSort(t *testing.T) {
	si := newStoreStandIn(t)
	addr, other := freeLoopback(t), freeLoopback(t)
	name := func(a string, slot int) string { n, _ := fdName(a, slot); return n }
	dup := func(fd int) int {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	l0, l1 := listenerFD(t, addr), listenerFD(t, addr)
	lOther := listenerFD(t, other)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[1])
	// Passed descriptors are the master's to keep or close: give it
	// duplicates, and blocking ones, as a child's server may leave them.
	unix.SetNonblock(l0, false)
	passed := []listenFD{
		{dup(l0), name(addr, 0)},
		{dup(l1), name(addr, 0)}, // a second one of the name
		{dup(l1), name(addr, 5)}, // beyond the workers
		{dup(lOther), name(other, 1)},
		{pipe[0], name(addr, 1)}, // not a socket
		{dup(lOther), "unknown"},
	}
	inodes := make([]uint64, len(passed))
	for i, p := range passed {
		inodes[i] = inodeOf(t, p.fd)
	}
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.Sockets, cfg.Listen, cfg.Workers = SocketsMaster, tcpListen(addr), 2
	f := &fdStore{log: logTo(&logs), socket: si.path, passed: passed, kept: map[socketKey]int{}}
	f.sort(cfg)

	fd, ok := f.take(socketKey{addr: addr, slot: 0})
	if !ok || fd != passed[0].fd || len(f.kept) != 0 {
		t.Fatalf("kept %v and slot 0's %d (%v), want only slot 0's %d", f.kept, fd, ok, passed[0].fd)
	}
	defer unix.Close(fd)
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Error("the kept listener is blocking")
	}
	for i, p := range passed[1:] {
		var st unix.Stat_t
		if unix.Fstat(p.fd, &st) == nil && st.Ino == inodes[i+1] {
			t.Errorf("%s (fd %d) still open", p.name, p.fd)
		}
	}
	var removed []string
	for range 5 { // one per dropped name
		m := si.next()
		n, ok := strings.CutPrefix(m.state, "FDSTOREREMOVE=1\nFDNAME=")
		if !ok {
			t.Fatalf("datagram %q, want a removal", m.state)
		}
		removed = append(removed, n)
	}
	si.none()
	want := []string{name(addr, 0), name(addr, 5), name(other, 1), name(addr, 1), "unknown"}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	var line struct {
		Msg     string
		Took    []string
		Dropped []string
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("one log line: %v\n%s", err, logs.String())
	}
	if line.Msg != "sockets passed by the service manager" || !slices.Equal(line.Took, []string{name(addr, 0)}) ||
		len(line.Dropped) != 5 {
		t.Fatalf("log line %+v", line)
	}
	for i, reason := range []string{"a second descriptor", "slot 5 of 2 workers", "not a listen address",
		"not a socket", "not a name of prefork's"} {
		if !strings.Contains(line.Dropped[i], reason) {
			t.Errorf("dropped %q, want %q in it", line.Dropped[i], reason)
		}
	}
}

// In child socket mode nothing passed is kept.
func TestFDStoreSortChildMode(t *testing.T) {
	addr := freeLoopback(t)
	l := listenerFD(t, addr)
	d, err := unix.FcntlInt(uintptr(l), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen, cfg.Workers = tcpListen(addr), 2
	var logs bytes.Buffer
	name, _ := fdName(addr, 0)
	f := &fdStore{log: logTo(&logs), passed: []listenFD{{d, name}}, kept: map[socketKey]int{}}
	f.sort(cfg)
	if len(f.kept) != 0 || !strings.Contains(logs.String(), "not in master socket mode") {
		t.Errorf("kept %v, log %s", f.kept, logs.String())
	}
	if _, err := unix.FcntlInt(uintptr(d), unix.F_GETFD, 0); err == nil && inodeOf(t, d) == inodeOf(t, l) {
		t.Error("the passed listener is still open")
	}
}

// The socket activation variables are the master's alone: it unsets
// them, whosever they were, and touches no descriptor of another pid's.
func TestOpenFDStoreUnsetsVariables(t *testing.T) {
	t.Setenv("LISTEN_PID", fmt.Sprint(os.Getpid()+1))
	t.Setenv("LISTEN_FDS", "2")
	t.Setenv("LISTEN_FDNAMES", "a:b")
	t.Setenv("NOTIFY_SOCKET", "")
	if f := openFDStore(slog.New(slog.DiscardHandler)); f != nil {
		t.Errorf("openFDStore = %+v, want nil: nothing to send to, nothing passed", f)
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if val, ok := os.LookupEnv(v); ok {
			t.Errorf("%s=%q still set", v, val)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "@somewhere")
	if f := openFDStore(slog.New(slog.DiscardHandler)); f == nil || f.socket != "@somewhere" {
		t.Errorf("openFDStore = %+v, want one sending to @somewhere", f)
	}
}

// A store nobody listens on costs one warning, then debug lines.
func TestFDStoreSendFailureWarnsOnce(t *testing.T) {
	var logs bytes.Buffer
	f := &fdStore{log: logTo(&logs), socket: filepath.Join(t.TempDir(), "absent"), kept: map[socketKey]int{}}
	fd := listenerFD(t, freeLoopback(t))
	f.put(socketKey{addr: "127.0.0.1:1", slot: 0}, fd)
	f.remove(socketKey{addr: "127.0.0.1:1", slot: 0})
	warn, debug := strings.Count(logs.String(), `"level":"WARN"`), strings.Count(logs.String(), `"level":"DEBUG"`)
	if warn != 1 || debug != 1 {
		t.Errorf("%d warnings, %d debug lines, want 1 and 1:\n%s", warn, debug, logs.String())
	}
}

// A listener of a master that died with its steering program attached is
// taken under a new program, once the kernel has let the old program's
// sockets array go; without steering, the old program is detached.
func TestSocketSetSteersStored(t *testing.T) {
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("steer=%v", on), func(t *testing.T) {
			addr := freeLoopback(t)
			fds := [2]int{listenerFD(t, addr), listenerFD(t, addr)}
			// The dead master: its program and array hold the sockets,
			// its descriptors of them are closed.
			old, err := steer.Load(MaxWorkers)
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Attach(fds[0]); err != nil {
				t.Fatal(err)
			}
			for slot, fd := range fds {
				if err := old.SetSocket(slot, fd); err != nil {
					t.Fatal(err)
				}
			}
			old.Close()
			kept := map[socketKey]int{}
			for slot, fd := range fds {
				d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				kept[socketKey{addr: addr, slot: slot}] = d
			}
			s := newSocketSet()
			s.steer = on
			s.store = &fdStore{log: slog.New(slog.DiscardHandler), kept: kept}
			defer s.closeAll()
			if err := s.ensure(tcpListen(addr), 2); err != nil {
				t.Fatal(err)
			}
			if on != (s.steerer(addr) != nil) {
				t.Errorf("steerer %v, want one: %v", s.steerer(addr), on)
			}
			if !on {
				if err := steer.Detach(fds[0]); !errors.Is(err, unix.ENOENT) {
					t.Errorf("the old program is still attached: detach = %v", err)
				}
			}
		})
	}
}
