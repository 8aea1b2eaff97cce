package proctree

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"sort"
	"testing"
)

// TestWaitsOnSelfEpoll: Go's poller registers a listener in its epoll set,
// and a goroutine in Accept waits there.
func TestWaitsOnSelfEpoll(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ln.Accept()
	inode := listenerInode(t, ln)
	eventually(t, "WaitsOn(self)", func() (bool, error) { return WaitsOn([]int{os.Getpid()}, inode) })
}

// TestWaitsOnHelper: a child waits on its inherited socket, moved to
// another fd, in each system call WaitsOn knows.
func TestWaitsOnHelper(t *testing.T) {
	t.Parallel()
	modes := helperModes()
	names := make([]string, 0, len(modes))
	for name := range modes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, _, inode := listenFile(t)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+name)
			pid, _ := start(t, cmd, true, f)
			if name == "epoll-out" {
				assertNotWaiting(t, pid, inode)
				return
			}
			eventually(t, "WaitsOn(helper "+name+")", func() (bool, error) { return WaitsOn([]int{pid}, inode) })
			// The test process holds the socket too, but waits on nothing.
			assertNotWaiting(t, os.Getpid(), inode)
		})
	}
}

// TestWaitsOnPython: a foreign server's ways of waiting, in Python.
func TestWaitsOnPython(t *testing.T) {
	t.Parallel()
	needPython(t)
	const prelude = "import socket, select\n" +
		"s = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)\n"
	tests := []struct {
		name, wait string
	}{
		{name: "accept", wait: "s.accept()"},
		{name: "select", wait: "select.select([s], [], [])"},
		{name: "poll", wait: "p = select.poll(); p.register(s, select.POLLIN); p.poll()"},
		{name: "epoll", wait: "e = select.epoll(); e.register(s, select.EPOLLIN); e.poll()"},
		{name: "selectors", wait: "import selectors; d = selectors.DefaultSelector(); d.register(s, selectors.EVENT_READ); d.select()"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, _, inode := listenFile(t)
			code := prelude + "print('ready', flush=True)\n" + tt.wait
			pid, _ := start(t, exec.Command(pythonPath, "-c", code), true, f)
			eventually(t, "WaitsOn(python "+tt.name+")", func() (bool, error) { return WaitsOn([]int{pid}, inode) })
		})
	}
}

// TestWaitsOnHolderNotWaiting: sleep holds the socket and never looks at
// it.
func TestWaitsOnHolderNotWaiting(t *testing.T) {
	t.Parallel()
	f, _, inode := listenFile(t)
	pid, _ := start(t, exec.Command("sleep", "30"), false, f)
	assertNotWaiting(t, pid, inode)
}

// TestWaitsOnGone: pids of no process, and a socket nobody holds, are
// not errors.
func TestWaitsOnGone(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	_, _, inode := listenFile(t)
	waits, err := waitsOnPatiently([]int{cmd.Process.Pid, os.Getpid()}, inode+1<<31)
	if waits || err != nil {
		t.Fatalf("WaitsOn(exited, self) = %v, %v; want false, nil", waits, err)
	}
}

// assertNotWaiting fails the test if WaitsOn finds pid waiting on inode,
// or fails.
func assertNotWaiting(t *testing.T, pid int, inode uint64) {
	t.Helper()
	if waits, err := waitsOnPatiently([]int{pid}, inode); waits || err != nil {
		t.Fatalf("WaitsOn(%d) = %v, %v; want false, nil", pid, waits, err)
	}
}

// waitsOnPatiently is WaitsOn, asked again after a timeout (see
// eventually).
func waitsOnPatiently(pids []int, inode uint64) (bool, error) {
	waits, err := WaitsOn(pids, inode)
	for i := 0; i < 5 && errors.Is(err, os.ErrDeadlineExceeded); i++ {
		waits, err = WaitsOn(pids, inode)
	}
	return waits, err
}

// listenerInode returns the socket inode of a Go listener.
func listenerInode(t testing.TB, ln net.Listener) uint64 {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var inode uint64
	var ierr error
	if err := raw.Control(func(fd uintptr) { inode, ierr = InodeOf(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return inode
}
