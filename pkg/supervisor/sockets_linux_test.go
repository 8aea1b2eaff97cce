package supervisor

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// polled returns the descriptors registered in any epoll instance of this
// process (the "tfd:" lines of an eventpoll descriptor's fdinfo): Go's
// netpoller is one.
func polled(t *testing.T) map[int]bool {
	t.Helper()
	fds := map[int]bool{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "tfd:" {
				n, _ := strconv.Atoi(f[1])
				fds[n] = true
			}
		}
	}
	return fds
}

// The set's listeners are bare descriptors: listening, non-blocking (the
// children's fd 3 shares the flag, TRAPS 5), in no epoll instance (the
// master is not woken by connections it never accepts), and closed when
// released.
func TestSocketSetHoldsUnpolledDescriptors(t *testing.T) {
	s := newSocketSet()
	defer s.closeAll()
	// A fixed port for both slots: one reuseport group.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	if err := s.ensure(tcpListen(addr), 2); err != nil {
		t.Fatal(err)
	}
	if !s.has(addr) || s.has("127.0.0.1:1") {
		t.Errorf("has(%s) = %v, has(other) = %v", addr, s.has(addr), s.has("127.0.0.1:1"))
	}
	fds := [2]int{}
	for slot := range 2 {
		fd, err := s.fd(addr, slot)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := s.fd(addr, slot); again != fd {
			t.Errorf("slot %d: fd %d, then %d", slot, fd, again)
		}
		fds[slot] = fd
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("slot %d: flags %o (%v), want O_NONBLOCK", slot, fl, err)
		}
		if s.inode(addr, slot) == 0 {
			t.Errorf("slot %d: no inode", slot)
		}
	}
	if fds[0] == fds[1] {
		t.Fatalf("both slots got fd %d", fds[0])
	}

	// Connections arrive in the queues, which nobody accepts.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		q0, _ := s.acceptQueue(addr, 0)
		q1, _ := s.acceptQueue(addr, 1)
		if q0+q1 == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept queues %d + %d, want 4", q0, q1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := polled(t)
	for slot, fd := range fds {
		if p[fd] {
			t.Errorf("slot %d: fd %d is in an epoll instance", slot, fd)
		}
	}

	s.release(func(_ string, slot int) bool { return slot == 0 })
	if _, ok := s.acceptQueue(addr, 1); ok {
		t.Error("slot 1 still held after release")
	}
	if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFL, 0); err != nil {
		t.Errorf("slot 0, in use, closed by release: %v", err)
	}
	s.closeAll()
	if s.has(addr) {
		t.Error("closeAll left a listener")
	}
	s.closeAll() // a second time closes nothing twice
}

// A listener that cannot be bound is an error naming the slot.
func TestSocketSetBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // no SO_REUSEPORT: nobody joins
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newSocketSet()
	defer s.closeAll()
	err = s.ensure(tcpListen(ln.Addr().String()), 1)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bind slot 0 on %s", ln.Addr())) {
		t.Errorf("ensure on a taken address = %v", err)
	}
}
