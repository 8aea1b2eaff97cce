package sockopt

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// listenAs binds a SO_REUSEPORT listener on addr from a socket owned by
// uid: made on a locked thread whose filesystem uid is uid for that
// moment, the way the kernel decides a socket's owner.
func listenAs(t *testing.T, uid int, addr string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		unix.SetfsuidRetUid(uid)
		ln, err := Listen(context.Background(), addr)
		if err == nil {
			ln.Close()
		}
		done <- err
	}()
	return <-done
}

// A reservation lets the owner's SO_REUSEPORT listeners bind beside it,
// and no one else: neither another user, nor a listener of the owner's
// without SO_REUSEPORT.
func TestReserveFD(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fd, err := ReserveFD(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	for range 2 { // and again after the first listener is gone
		own, err := Listen(context.Background(), addr)
		if err != nil {
			t.Fatalf("the owner's SO_REUSEPORT listener beside the reservation: %v", err)
		}
		own.Close()
	}
	if err := CheckFree(addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a listener without SO_REUSEPORT beside the reservation: %v, want EADDRINUSE", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a socket of another user")
	}
	if err := listenAs(t, 65534, addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("another user's SO_REUSEPORT listener: %v, want EADDRINUSE", err)
	}
}
