package proctree

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"golang.org/x/sys/unix"
)

// helperEnv switches the test binary into a helper child (TestMain): it
// takes the listening socket at fd 3, moves it to helperFD, prints "ready"
// and blocks in the system call its mode names, for WaitsOn to find.
const helperEnv = "PROCTREE_HELPER"

// helperFD is where a helper keeps the socket: another number than the
// inherited one, as a server that dup2()s it does, so only the inode can
// match it.
const helperFD = 10

// deadline bounds every wait of the tests.
const deadline = 10 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, runHelper(mode))
		os.Exit(1)
	}
	goleak.VerifyTestMain(m) // exits; fails on a goroutine left running
}

// waitMode blocks in one way of waiting for a connection on fd, calling
// ready just before.
type waitMode func(fd int, ready func()) error

// helperModes are the helper's ways of waiting, those of every
// architecture and then archModes.
func helperModes() map[string]waitMode {
	modes := map[string]waitMode{
		"accept4": func(fd int, ready func()) error {
			ready()
			return retry(func() error { _, _, err := unix.Accept4(fd, 0); return err })
		},
		"ppoll": func(fd int, ready func()) error {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			ready()
			return retry(func() error { _, err := unix.Ppoll(fds, nil, nil); return err })
		},
		"pselect6": func(fd int, ready func()) error {
			ready()
			return retry(func() error {
				var set unix.FdSet
				set.Set(fd)
				_, err := unix.Pselect(fd+1, &set, nil, nil, nil, nil)
				return err
			})
		},
		"epoll": func(fd int, ready func()) error { return epollWait(fd, unix.EPOLLIN, ready) },
		// A listening socket never becomes writable: registered, but not
		// waited on for connections.
		"epoll-out": func(fd int, ready func()) error { return epollWait(fd, unix.EPOLLOUT, ready) },
	}
	for name, mode := range archModes() {
		modes[name] = mode
	}
	return modes
}

// epollWait registers fd in a new epoll set for events and waits on it.
func epollWait(fd int, events uint32, ready func()) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		return err
	}
	ready()
	return retry(func() error { _, err := unix.EpollWait(ep, make([]unix.EpollEvent, 1), -1); return err })
}

// retry repeats call while a signal interrupts it (Go's runtime sends
// some); it returns only when the call fails otherwise or succeeds, which
// no test lets happen.
func retry(call func() error) error {
	for {
		if err := call(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// runHelper is the helper child's main.
func runHelper(mode string) error {
	wait, ok := helperModes()[mode]
	if !ok {
		wait, ok = packetModes()[mode]
	}
	if !ok {
		return fmt.Errorf("unknown mode")
	}
	if err := unix.Dup3(3, helperFD, 0); err != nil {
		return err
	}
	unix.Close(3)
	return wait(helperFD, func() { fmt.Println("ready") })
}

// listenFile returns a blocking TCP listener on a free port of 127.0.0.1,
// made without Go's poller so that the test process holds it without
// waiting on it, with its address and inode.
func listenFile(t testing.TB) (*os.File, netip.AddrPort, uint64) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
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
	inode, err := InodeOf(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))
	return f, addr, inode
}

// start starts cmd with files as its fds 3, 4, ..., killed with the test
// (and with the test process, by PDEATHSIG) and reaped at cleanup, and
// returns its pid and stdout. If waitReady, it first waits for the child's
// "ready" line.
func start(t testing.TB, cmd *exec.Cmd, waitReady bool, files ...*os.File) (int, *bufio.Reader) {
	t.Helper()
	cmd.ExtraFiles = files
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Stderr = &strings.Builder{}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := bufio.NewReader(pipe)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if waitReady {
		line, err := readLine(stdout)
		if err != nil || line != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s: got %q, %v, want ready; stderr: %s", cmd.Args, line, err, cmd.Stderr)
		}
	}
	return cmd.Process.Pid, stdout
}

// readLine reads a line from r within the deadline.
func readLine(r *bufio.Reader) (string, error) {
	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := r.ReadString('\n')
		got <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-got:
		return res.line, res.err
	case <-time.After(deadline):
		return "", errors.New("no line before the deadline")
	}
}

// eventually polls cond until it returns true, and fails the test if it
// has not by the deadline or if it fails. A timeout of WaitsOn's, which a
// heavily loaded machine can cause, is only a reason to ask again.
func eventually(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, err := cond()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: still false after %v", what, deadline)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pythonPath is Debian's python3: pyenv's shim comes first on PATH but
// starts slower and may lack a version.
const pythonPath = "/usr/bin/python3"

// needPython skips the test without /usr/bin/python3.
func needPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(pythonPath); err != nil {
		t.Skipf("no %s: %v", pythonPath, err)
	}
}
