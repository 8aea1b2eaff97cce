package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"golang.org/x/sys/unix"
)

// helperEnv switches the test binary into one of the helper processes
// below, as tableflip's tests re-run themselves as the child.
const helperEnv = "PREFORK_CHILD_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		goleak.VerifyTestMain(m) // exits; fails on a goroutine left running
	case "listen":
		os.Exit(report(helperListen()))
	case "multi":
		os.Exit(report(helperMulti()))
	case "drain":
		os.Exit(report(helperDrain()))
	case "watchdog":
		os.Exit(report(helperWatchdog()))
	default:
		fmt.Fprintf(os.Stderr, "unknown %s\n", helperEnv)
		os.Exit(2)
	}
}

// helperEnviron is the environment of a helper process running mode.
// The race detector's default one-second pause at exit is turned off.
func helperEnviron(mode string) []string {
	return append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
}

// report prints a helper's error for the parent test and turns it into
// an exit status.
func report(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// helperListen is a child under --sockets master: it takes fd 3 through
// Listen and answers one request with its pid.
func helperListen() error {
	// os/exec cannot know the pid before the fork, so the helper sets
	// LISTEN_PID itself, standing in for what the master's spawn does.
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	ln, err := Listen(context.Background())
	if err != nil {
		return err
	}
	defer ln.Close()
	for _, name := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(name); ok {
			return fmt.Errorf("%s=%q still set after Listen", name, v)
		}
	}
	if _, err := unix.FcntlInt(listenFD, unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		return fmt.Errorf("fd 3 still open after Listen (F_GETFD: %v)", err)
	}
	if err := checkNonblock(ln.(*countingListener).Listener.(syscallConner)); err != nil {
		return err
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return err
	}
	req.Body.Close()
	body := strconv.Itoa(os.Getpid())
	_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	return err
}

// syscallConner is a socket whose descriptor can be reached without
// File() or Fd(), which would change its blocking mode.
type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// checkNonblock fails if the socket's open file description, shared with
// the master in --sockets master mode, lost O_NONBLOCK (TRAPS 5).
func checkNonblock(s syscallConner) error {
	rc, err := s.SyscallConn()
	if err != nil {
		return err
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	if flags&unix.O_NONBLOCK == 0 {
		return errors.New("listener lost O_NONBLOCK")
	}
	return nil
}

// A child started with the listener as fd 3 and LISTEN_FDS=1 serves on
// it, closes fd 3, unsets LISTEN_* and leaves the socket non-blocking.
func TestListenInheritsFD3(t *testing.T) {
	file, addr := rawListener(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(helperEnviron("listen"), "LISTEN_FDS=1", "LISTEN_FDNAMES=prefork",
		"PREFORK_LISTEN=127.0.0.1:1") // must lose to the inherited socket
	cmd.ExtraFiles = []*os.File{file} // becomes fd 3
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	c := dial(t, addr) // queued on the shared socket until the helper accepts
	resp, body, err := c.get("/")
	if err != nil {
		t.Fatalf("request to the helper: %v (stderr: %s)", err, stderr.String())
	}
	if resp.StatusCode != http.StatusOK || body != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("got %d %q, want 200 from pid %d", resp.StatusCode, body, cmd.Process.Pid)
	}
	if err := recv(t, "helper exit", exited); err != nil {
		t.Fatalf("helper: %v: %s", err, stderr.String())
	}
	// Through SyscallConn: file.Fd() would itself clear O_NONBLOCK.
	if err := checkNonblock(file); err != nil {
		t.Errorf("the master's copy: %v", err)
	}
}

// rawListener makes a listening socket the way a master holding sockets
// should: SOCK_NONBLOCK and wrapped by os.NewFile, which os/exec can pass
// without switching it to blocking mode (TRAPS 5).
func rawListener(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// helperDrain arms Draining, says so on stdout with whether SIGINT is now
// ignored, and exits 0 once the channel is closed.
func helperDrain() error {
	ch := Draining()
	ignored, err := sigintIgnored()
	if err != nil {
		return err
	}
	fmt.Printf("armed sigint-ignored=%v\n", ignored)
	select {
	case <-ch:
		fmt.Println("draining")
		return nil
	case <-time.After(waitTimeout):
		return errors.New("no drain")
	}
}

// sigintIgnored reads the kernel's ignored-signal mask of this process.
func sigintIgnored() (bool, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for line := range strings.Lines(string(data)) {
		if hex, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				return false, err
			}
			return mask&(1<<(uint(syscall.SIGINT)-1)) != 0, nil
		}
	}
	return false, errors.New("no SigIgn in /proc/self/status")
}

// Draining is closed by SIGTERM, and by SIGINT only when standalone; under
// a master SIGINT is ignored by the kernel and the child stays up.
func TestDrainingSignals(t *testing.T) {
	tests := []struct {
		name        string
		slot        string // PREFORK_SLOT; "" = standalone
		signals     []syscall.Signal
		wantIgnored bool
	}{
		{name: "standalone TERM", signals: []syscall.Signal{syscall.SIGTERM}},
		{name: "standalone INT", signals: []syscall.Signal{syscall.SIGINT}},
		{name: "supervised TERM", slot: "0", signals: []syscall.Signal{syscall.SIGTERM}, wantIgnored: true},
		// INT first: had it not been ignored, it would kill the helper.
		{name: "supervised INT then TERM", slot: "0", signals: []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}, wantIgnored: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(helperEnviron("drain"), "PREFORK_SLOT="+tt.slot)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			lines := readLines(stdout)
			armed := recv(t, "helper armed", lines)
			if want := fmt.Sprintf("armed sigint-ignored=%v", tt.wantIgnored); armed != want {
				t.Fatalf("helper said %q, want %q", armed, want)
			}
			for _, sig := range tt.signals {
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
			}
			if got := recv(t, "helper draining", lines); got != "draining" {
				t.Fatalf("helper said %q, want draining", got)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			if err := recv(t, "helper exit", exited); err != nil {
				t.Fatalf("helper: %v: %s", err, stderr.String())
			}
		})
	}
}

// readLines delivers r's lines on a channel; it is closed at EOF, after
// which a receive yields "".
func readLines(r io.Reader) <-chan string {
	lines := make(chan string, 8)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}
