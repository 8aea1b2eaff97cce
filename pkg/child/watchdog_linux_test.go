package child

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Variables that steer helperWatchdog.
const (
	// helperSickEnv names a file; the helper's watchdog check fails while
	// it exists.
	helperSickEnv = "PREFORK_CHILD_TEST_SICK"
	// helperOwnPIDEnv makes the helper set WATCHDOG_PID to its own pid,
	// which only it can know.
	helperOwnPIDEnv = "PREFORK_CHILD_TEST_WATCHDOG_OWN_PID"
)

// watchdogPeriod is the ping period the tests expect of WATCHDOG_USEC=100000.
const watchdogPeriod = 50 * time.Millisecond

// quietWindow is how long a test listens to be sure no ping comes: six
// ping periods.
const quietWindow = 6 * watchdogPeriod

// helperWatchdog calls Ready twice, checks that the WATCHDOG_* variables
// are gone, prints how many pingers run and Ready's error, and then lives
// until its stdin is closed.
func helperWatchdog() error {
	if os.Getenv(helperOwnPIDEnv) != "" {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	if sick := os.Getenv(helperSickEnv); sick != "" {
		SetWatchdogCheck(func(context.Context) error {
			if _, err := os.Stat(sick); err == nil {
				return errors.New("sick file present")
			}
			return nil
		})
	}
	err := Ready()
	if err2 := Ready(); fmt.Sprint(err2) != fmt.Sprint(err) {
		return fmt.Errorf("second Ready: %v, first: %v", err2, err)
	}
	for _, name := range []string{"WATCHDOG_USEC", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(name); ok {
			return fmt.Errorf("%s=%q still set after Ready", name, v)
		}
	}
	fmt.Printf("pingers=%d err=%v\n", countPingers(), err)
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// pingerCreator matches the "created by" line of a goroutine that
// startWatchdog started, inlined (Ready.startWatchdog.func2) or not.
var pingerCreator = regexp.MustCompile(`(?m)^created by \S*\bstartWatchdog\.func\d+ `)

// countPingers counts the goroutines startWatchdog started. Their
// creator, unlike their top frame, shows before they first run.
func countPingers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return len(pingerCreator.FindAll(buf, -1))
}

// syncBuffer is a strings.Builder that os/exec may write while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// notifySocket is a test's own sd_notify socket, reading senders' pids by
// SO_PASSCRED as the master does.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

// datagram is one message and the pid that sent it.
type datagram struct {
	msg string
	pid int
	at  time.Time
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1),
			// The kernel's receive time is the send time: unlike the
			// time the test reads a datagram, it is not bunched up when
			// the test runs late.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1))
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return &notifySocket{path: path, conn: conn}
}

// read returns the next datagram, or ok false when none came within d.
func (s *notifySocket) read(t *testing.T, d time.Duration) (dg datagram, ok bool) {
	t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return datagram{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	dg = datagram{msg: string(buf[:n]), pid: -1}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			dg.pid = int(cred.Pid)
		}
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS &&
			len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			dg.at = time.Unix(ts.Unix())
		}
	}
	if dg.at.IsZero() {
		t.Fatal("datagram without a kernel timestamp")
	}
	return dg, true
}

// expect reads the next datagram, which must be msg from pid.
func (s *notifySocket) expect(t *testing.T, msg string, pid int) datagram {
	t.Helper()
	dg, ok := s.read(t, waitTimeout)
	if !ok {
		t.Fatalf("no %s within %v", msg, waitTimeout)
	}
	if dg.msg != msg || dg.pid != pid {
		t.Fatalf("got %q from pid %d, want %s from pid %d", dg.msg, dg.pid, msg, pid)
	}
	return dg
}

// expectQuiet fails if any datagram comes within d.
func (s *notifySocket) expectQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	if dg, ok := s.read(t, d); ok {
		t.Fatalf("got %q from pid %d, want silence for %v", dg.msg, dg.pid, d)
	}
}

// watchdogHelper is a running helperWatchdog.
type watchdogHelper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr syncBuffer
	lines  <-chan string
	exited chan error
}

// startWatchdogHelper runs helperWatchdog with NOTIFY_SOCKET at sock and
// env; WATCHDOG_* variables the test process has are dropped first.
// Cleanup ends it by closing its stdin.
func startWatchdogHelper(t *testing.T, sock *notifySocket, env ...string) *watchdogHelper {
	t.Helper()
	h := &watchdogHelper{exited: make(chan error, 1)}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range helperEnviron("watchdog") {
		if !strings.HasPrefix(kv, "WATCHDOG_") {
			h.cmd.Env = append(h.cmd.Env, kv)
		}
	}
	h.cmd.Env = append(h.cmd.Env, append([]string{"NOTIFY_SOCKET=" + sock.path}, env...)...)
	h.cmd.Stderr = &h.stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.lines = readLines(stdout)
	go func() { h.exited <- h.cmd.Wait() }()
	t.Cleanup(func() {
		h.stdin.Close()
		select {
		case <-h.exited:
		case <-time.After(waitTimeout):
			h.cmd.Process.Kill()
			<-h.exited
		}
	})
	return h
}

// stop closes the helper's stdin and returns its stderr and exit error.
func (h *watchdogHelper) stop(t *testing.T) (string, error) {
	t.Helper()
	h.stdin.Close()
	err := recv(t, "helper exit", h.exited)
	h.exited <- err // for the cleanup
	return h.stderr.String(), err
}

// Ready starts pinging only for a watchdog meant for this process, once
// however often it is called, and unsets the variables; the pings come
// from the child's own pid at about every WATCHDOG_USEC/2.
func TestWatchdogPings(t *testing.T) {
	tests := []struct {
		name      string
		env       []string
		wantPings bool
		wantLine  string // what the helper prints after Ready
	}{
		{name: "WATCHDOG_USEC", env: []string{"WATCHDOG_USEC=100000"}, wantPings: true, wantLine: "pingers=1 err=<nil>"},
		{name: "WATCHDOG_PID of this process", env: []string{"WATCHDOG_USEC=100000", helperOwnPIDEnv + "=1"},
			wantPings: true, wantLine: "pingers=1 err=<nil>"},
		{name: "WATCHDOG_PID of another process", env: []string{"WATCHDOG_USEC=100000", fmt.Sprintf("WATCHDOG_PID=%d", os.Getpid())},
			wantLine: "pingers=0 err=<nil>"},
		{name: "WATCHDOG_USEC unset", wantLine: "pingers=0 err=<nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := listenNotify(t)
			h := startWatchdogHelper(t, sock, tt.env...)
			pid := h.cmd.Process.Pid
			sock.expect(t, "READY=1", pid)
			if got := recv(t, "helper's report", h.lines); got != tt.wantLine {
				t.Fatalf("helper said %q, want %q (stderr %s)", got, tt.wantLine, h.stderr.String())
			}
			if !tt.wantPings {
				sock.expect(t, "READY=1", pid) // the helper calls Ready twice
				sock.expectQuiet(t, quietWindow)
				return
			}
			// The helper's second READY=1 races with the first ping.
			var pings []datagram
			readies := 1
			for len(pings) < 6 {
				dg, ok := sock.read(t, waitTimeout)
				switch {
				case !ok:
					t.Fatalf("%d pings within %v, want 6", len(pings), waitTimeout)
				case dg.pid != pid:
					t.Fatalf("got %q from pid %d, want pid %d", dg.msg, dg.pid, pid)
				case dg.msg == "READY=1" && readies < 2:
					readies++
				case dg.msg == "WATCHDOG=1":
					pings = append(pings, dg)
				default:
					t.Fatalf("got %q, want WATCHDOG=1", dg.msg)
				}
			}
			// The first ping goes at once, so it is not timed. After a
			// stall a Ticker delivers one late tick at once, so a single
			// gap may be short; the mean of four is not, unless the
			// pinger ignores its period.
			first, last := pings[1], pings[5]
			if mean := last.at.Sub(first.at) / 4; mean < 20*time.Millisecond {
				t.Errorf("pings %v apart on average, want about %v", mean, watchdogPeriod)
			}
		})
	}
}

// A malformed WATCHDOG_USEC makes Ready fail before READY=1 is sent.
func TestWatchdogMalformed(t *testing.T) {
	sock := listenNotify(t)
	h := startWatchdogHelper(t, sock, "WATCHDOG_USEC=100ms")
	got := recv(t, "helper's report", h.lines)
	if !strings.HasPrefix(got, "pingers=0 err=parse WATCHDOG_USEC") {
		t.Fatalf("helper said %q, want no pinger and a WATCHDOG_USEC error", got)
	}
	sock.expectQuiet(t, quietWindow)
}

// While the check fails no WATCHDOG=1 is sent, and one line on stderr
// says why; once it passes the pings resume.
func TestWatchdogCheckGatesPings(t *testing.T) {
	sick := filepath.Join(t.TempDir(), "sick")
	if err := os.WriteFile(sick, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := listenNotify(t)
	h := startWatchdogHelper(t, sock, "WATCHDOG_USEC=100000", helperSickEnv+"="+sick)
	pid := h.cmd.Process.Pid
	sock.expect(t, "READY=1", pid)
	sock.expect(t, "READY=1", pid)
	if got := recv(t, "helper's report", h.lines); got != "pingers=1 err=<nil>" {
		t.Fatalf("helper said %q (stderr %s)", got, h.stderr.String())
	}
	sock.expectQuiet(t, quietWindow)
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	sock.expect(t, "WATCHDOG=1", pid)
	sock.expect(t, "WATCHDOG=1", pid)
	stderr, err := h.stop(t)
	if err != nil {
		t.Fatalf("helper: %v: %s", err, stderr)
	}
	if !strings.Contains(stderr, "watchdog pings stop until the check passes: watchdog check: sick file present") {
		t.Errorf("stderr %q does not say why the pings stopped", stderr)
	}
}
