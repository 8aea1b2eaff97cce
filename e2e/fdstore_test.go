package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// fdStore stands in for systemd's notify socket and its file descriptor
// store (FileDescriptorStoreMax=), as the service manager keeps it for a
// service: the descriptors of FDSTORE=1 under their FDNAME=, a socket
// stored twice kept once, FDSTOREREMOVE=1 closing every descriptor of its
// name. Every datagram's text is kept too.
type fdStore struct {
	t    *testing.T
	addr string // NOTIFY_SOCKET
	conn *net.UnixConn
	done chan struct{}

	mu     sync.Mutex
	stored []storedFD // in the order stored, which is the order systemd passes them in
	states []string
	change chan struct{}
}

type storedFD struct {
	name  string
	file  *os.File
	inode uint64
}

func newFDStore(t *testing.T) *fdStore {
	t.Helper()
	addr := fmt.Sprintf("@prefork-e2e-fdstore-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fdStore{t: t, addr: addr, conn: conn, done: make(chan struct{}), change: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, f := range s.stored {
			f.file.Close()
		}
		s.stored = nil
	})
	return s
}

// serve reads datagrams until the socket is closed.
func (s *fdStore) serve() {
	defer close(s.done)
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*64))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		s.receive(string(buf[:n]), received(oob[:oobn]))
	}
}

// received returns the descriptors of a datagram's control messages,
// close-on-exec: the test's other masters must not inherit them.
func received(oob []byte) []int {
	var fds []int
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
			fds = append(fds, fd)
		}
	}
	return fds
}

func (s *fdStore) receive(state string, fds []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vars := map[string]string{}
	for line := range strings.SplitSeq(state, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	switch {
	case vars["FDSTORE"] == "1":
		for _, fd := range fds {
			var st unix.Stat_t
			unix.Fstat(fd, &st)
			if slices.ContainsFunc(s.stored, func(f storedFD) bool { return f.inode == st.Ino }) {
				unix.Close(fd) // systemd keeps one copy of a socket
				continue
			}
			s.stored = append(s.stored, storedFD{name: vars["FDNAME"], file: os.NewFile(uintptr(fd), vars["FDNAME"]), inode: st.Ino})
		}
	case vars["FDSTOREREMOVE"] == "1":
		for _, fd := range fds {
			unix.Close(fd)
		}
		s.stored = slices.DeleteFunc(s.stored, func(f storedFD) bool {
			if f.name == vars["FDNAME"] {
				f.file.Close()
				return true
			}
			return false
		})
	default:
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	s.states = append(s.states, state)
	close(s.change)
	s.change = make(chan struct{})
}

// waitFor waits until cond holds of the states received and the names
// stored.
func (s *fdStore) waitFor(timeout time.Duration, what string, cond func(states, names []string) bool) {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		states, names := slices.Clone(s.states), s.names()
		change := s.change
		s.mu.Unlock()
		if cond(states, names) {
			return
		}
		select {
		case <-change:
		case <-deadline:
			s.t.Fatalf("waited %v for %s; received %q, storing %q", timeout, what, states, names)
		}
	}
}

// names returns the names stored, in order; s.mu is held.
func (s *fdStore) names() []string {
	var names []string
	for _, f := range s.stored {
		names = append(names, f.name)
	}
	return names
}

// count returns how many of states are exactly state.
func count(states []string, state string) int {
	n := 0
	for _, s := range states {
		if s == state {
			n++
		}
	}
	return n
}

// slotNames returns the names of the listeners of slots 0..n-1 on addr,
// as the master stores them.
func slotNames(addr string, n int) []string {
	var names []string
	for slot := range n {
		names = append(names, fmt.Sprintf("prefork.%d.%s", slot, strings.ReplaceAll(addr, ":", "%3A")))
	}
	return names
}

// passed is one descriptor for a master to start with.
type passed struct {
	name string
	file *os.File
}

// startPassed runs bin/master as systemd restarts a service with an fd
// store: fds as 3, 4, ... named by LISTEN_FDNAMES, LISTEN_FDS their
// count and LISTEN_PID the master's own pid, which only the process
// itself knows before exec (hence sh). NOTIFY_SOCKET is the store's.
func startPassed(t *testing.T, store *fdStore, addr string, fds []passed, args ...string) *master {
	t.Helper()
	var names []string
	var files []*os.File
	for _, p := range fds {
		names = append(names, p.name)
		files = append(files, p.file)
	}
	control := filepath.Join(t.TempDir(), "ctl.sock")
	full := append([]string{"-c", `LISTEN_PID=$$ exec "$@"`, "sh", filepath.Join(bin, "master"), "run",
		"--log-format", "json", "--control", control, "--metrics", "", "--listen", addr}, args...)
	m := &master{t: t, addr: addr, control: control, done: make(chan struct{}), pids: map[int]bool{}, change: make(chan struct{})}
	m.cmd = exec.Command("/bin/sh", full...)
	m.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+store.addr, "LISTEN_FDS="+strconv.Itoa(len(fds)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"))
	// Passing a descriptor through ExtraFiles makes the socket blocking
	// (TRAPS 5), as a careless service manager or server might: the
	// master must make it non-blocking again.
	m.cmd.ExtraFiles = files
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go m.readLogs(stderr)
	t.Cleanup(m.cleanup)
	return m
}

// storedFiles returns what the store holds, in order, to pass to a
// restarted master.
func (s *fdStore) storedFiles() []passed {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p []passed
	for _, f := range s.stored {
		p = append(p, passed{name: f.name, file: f.file})
	}
	return p
}

// Master socket mode under systemd with FileDescriptorStoreMax=: the
// master stores each slot's listener. SIGKILLed under load, it leaves the
// listeners in the store, where connections keep queuing while no master
// runs; the master systemd restarts with them takes them, and every
// queued connection is answered, none reset. Its stop then empties the
// store.
func TestFDStoreKeepsQueuedConnectionsAcrossMasterCrash(t *testing.T) {
	t.Parallel()
	const workers, clients, queued = 4, 8, 200
	store := newFDStore(t)
	addr := testkit.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	first := startMasterOn(t, addr, []string{"NOTIFY_SOCKET=" + store.addr}, "--sockets", "master",
		"--workers", strconv.Itoa(workers))
	names := slotNames(addr, workers)
	store.waitFor(30*time.Second, "READY=1 and every slot's listener stored", func(states, stored []string) bool {
		return count(states, "READY=1") == 1 && slices.Equal(stored, names)
	})

	// Load through the crash: a new connection per request, bounded.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loadDone := make(chan *loadResult, 1)
	go func() { loadDone <- runLoad(ctx, addr, perRequest, clients, 4000) }()
	time.Sleep(300 * time.Millisecond) // the load runs; not a measure

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(10 * time.Second)
	// Its children drain on their parent-death signal and exit; then no
	// process accepts, and the listeners live on in the store alone.
	eventually(t, 20*time.Second, "the first master's children gone", func() bool {
		return len(testkit.AliveOf(first.startedPIDs())) == 0
	})
	waiting := make([]net.Conn, 0, queued)
	defer func() {
		for _, c := range waiting {
			c.Close()
		}
	}()
	for range queued {
		c, err := dialTimeout(addr)
		if err != nil {
			t.Fatalf("connection %d while no master runs: %v", len(waiting), err)
		}
		waiting = append(waiting, c)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	inQueue := 0
	eventually(t, 5*time.Second, "the connections queued", func() bool {
		inQueue, _ = acceptQueued(port)
		return inQueue >= queued
	})

	second := startPassed(t, store, addr, store.storedFiles(), "--sockets", "master", "--workers", strconv.Itoa(workers))
	took := second.waitMsg(30*time.Second, 1, "sockets passed by the service manager")[0]
	if got := fmt.Sprint(took["took"]); got != fmt.Sprint(names) || took["dropped"] != nil {
		t.Errorf("took %v, dropped %v; want %v, none", took["took"], took["dropped"], names)
	}

	results := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range waiting {
		wg.Go(func() {
			kind := "answered"
			if err := readAnswer(c); err != nil {
				kind = testkit.Classify(err)
			}
			mu.Lock()
			results[kind]++
			mu.Unlock()
		})
	}
	wg.Wait()
	store.waitFor(30*time.Second, "READY=1 from the second master", func(states, _ []string) bool {
		return count(states, "READY=1") == 2
	})
	time.Sleep(200 * time.Millisecond) // some load on the second master; not a measure
	cancel()
	load := <-loadDone
	t.Logf("queued while no master ran: %d (accept queues held %d with the load's); answered after the restart: %v; "+
		"load through the crash (%d clients): %v", queued, inQueue, results, clients, load)
	if results["answered"] != queued {
		t.Errorf("of %d queued connections: %v, want all answered", queued, results)
	}
	if load.failed() != 0 {
		t.Errorf("load through the crash: %v, want no failure", load)
	}

	// A stop removes the listeners: the service is over.
	second.signal(syscall.SIGTERM)
	if code := second.wait(30 * time.Second); code != 0 {
		t.Errorf("second master exit code %d", code)
	}
	store.waitFor(10*time.Second, "the store emptied by the stop", func(_, stored []string) bool { return len(stored) == 0 })
}

// readAnswer reads the answer to the request sent on c: a 200 with its
// whole body, within 60 s.
func readAnswer(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %d", testkit.ErrStatus, resp.StatusCode)
	}
	return nil
}

// A master started with descriptors it has no use for (a slot beyond
// --workers, another address, a name not its own, something not a
// listener) closes them, removes them from the store, and says so in one
// line with the one it took.
func TestFDStoreDropsUnknownDescriptors(t *testing.T) {
	t.Parallel()
	store := newFDStore(t)
	// Port 0, then the port it got: a free port chosen and bound at
	// once, which the load of a test running beside this one cannot take
	// as a client's port in between.
	listenOn := func(a string) (*os.File, string) {
		fd, err := sockopt.ListenFD(a)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), a)
		t.Cleanup(func() { f.Close() })
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		return f, fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	}
	first, addr := listenOn("127.0.0.1:0")
	listener := func(a, name string) passed {
		f, _ := listenOn(a)
		return passed{name: name, file: f}
	}
	otherFile, other := listenOn("127.0.0.1:0")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	own := slotNames(addr, 2)
	fds := []passed{
		{name: own[0], file: first},
		listener(addr, slotNames(addr, 6)[5]),
		{name: slotNames(other, 1)[0], file: otherFile},
		{name: own[1], file: r}, // not a socket
		listener(addr, "cache"),
	}
	inodes := make([]uint64, len(fds))
	for i, p := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(int(p.file.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		inodes[i] = st.Ino
	}
	m := startPassed(t, store, addr, fds, "--sockets", "master", "--workers", "2")
	// The master has its copies; the test's would take connections in
	// the group that nobody accepts.
	for _, p := range fds {
		p.file.Close()
	}
	l := m.waitMsg(30*time.Second, 1, "sockets passed by the service manager")[0]
	if got := fmt.Sprint(l["took"]); got != fmt.Sprint([]string{own[0]}) {
		t.Errorf("took %s, want %s", got, own[0])
	}
	dropped, _ := l["dropped"].([]any)
	if len(dropped) != 4 {
		t.Fatalf("dropped %v, want 4", l["dropped"])
	}
	for i, want := range []string{"slot 5 of 2 workers", "not a listen address", "not a socket", "not a name of prefork's"} {
		if d := fmt.Sprint(dropped[i]); !strings.HasPrefix(d, fds[i+1].name+": ") || !strings.Contains(d, want) {
			t.Errorf("dropped %q, want %s: ...%s...", d, fds[i+1].name, want)
		}
	}
	store.waitFor(30*time.Second, "READY=1, both slots stored and the dropped names removed", func(states, stored []string) bool {
		for _, p := range fds[1:] {
			if count(states, "FDSTOREREMOVE=1\nFDNAME="+p.name) != 1 {
				return false
			}
		}
		return count(states, "READY=1") == 1 && slices.Equal(stored, own)
	})
	// The master holds the listener it took, none of the others.
	held := map[uint64]bool{}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", m.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", m.cmd.Process.Pid, e.Name()))
		var ino uint64
		if _, err := fmt.Sscanf(target, "socket:[%d]", &ino); err == nil {
			held[ino] = true
		}
	}
	for i, p := range fds {
		if held[inodes[i]] != (i == 0) {
			t.Errorf("%s: held by the master %v, want %v", p.name, held[inodes[i]], i == 0)
		}
	}
	if _, err := getWhoami(addr); err != nil {
		t.Errorf("GET /whoami: %v", err)
	}
}

// A master upgraded in place keeps its listeners, which the store holds
// already, and still keeps the store in step: a scale-down after the
// upgrade removes the retired slot's listener, a stop the others.
func TestFDStoreFollowsUpgradeInPlace(t *testing.T) {
	t.Parallel()
	store := newFDStore(t)
	addr := testkit.FreeAddr(t)
	m := startMasterOn(t, addr, []string{"NOTIFY_SOCKET=" + store.addr}, "--sockets", "master", "--workers", "3")
	names := slotNames(addr, 3)
	store.waitFor(30*time.Second, "READY=1 and every slot's listener stored", func(states, stored []string) bool {
		return count(states, "READY=1") == 1 && slices.Equal(stored, names)
	})
	m.signal(syscall.SIGUSR2)
	m.waitMsg(30*time.Second, 1, "master upgraded in place")
	if code, out, errOut := m.ctl("scale", "2"); code != 0 {
		t.Fatalf("scale 2: exit %d %q %q", code, out, errOut)
	}
	store.waitFor(10*time.Second, "slot 2's listener removed", func(states, stored []string) bool {
		return count(states, "FDSTOREREMOVE=1\nFDNAME="+names[2]) == 1 && slices.Equal(stored, names[:2])
	})
	m.signal(syscall.SIGTERM)
	if code := m.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	store.waitFor(10*time.Second, "the store emptied by the stop", func(_, stored []string) bool { return len(stored) == 0 })
}
