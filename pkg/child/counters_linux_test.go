package child

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/pkg/counters"
)

// newCountersPage makes a page closed at cleanup and a close-on-exec
// duplicate of its fd, as the child's inherited copy.
func newCountersPage(t *testing.T) (*counters.Page, int) {
	t.Helper()
	page, err := counters.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	fd, err := unix.FcntlInt(uintptr(page.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return page, fd
}

// listenCounting calls Listen on a fresh loopback port with
// PREFORK_COUNTERS_FD set to value.
func listenCounting(t *testing.T, value string) (net.Listener, error) {
	t.Helper()
	t.Setenv("LISTEN_FDS", "")
	t.Setenv(envListen, "127.0.0.1:0")
	t.Setenv(envCountersFD, value)
	useFreshListeners(t)
	ln, err := Listen(context.Background())
	if err == nil {
		t.Cleanup(func() { ln.Close() })
	}
	return ln, err
}

func TestListenCountsAccepts(t *testing.T) {
	const k = 25
	page, fd := newCountersPage(t)
	ln, err := listenCounting(t, itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv(envCountersFD); ok {
		t.Errorf("%s still set after Listen", envCountersFD)
	}
	accepted := make(chan error, 1)
	go func() {
		for range k {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			c.Close()
		}
		accepted <- nil
	}()
	for range k {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if err := recv(t, "accepts", accepted); err != nil {
		t.Fatal(err)
	}
	if got := page.Accepts(); got != k {
		t.Errorf("page.Accepts() = %d, want %d", got, k)
	}
	if got := page.Listener(0); got != k {
		t.Errorf("page.Listener(0) = %d, want %d", got, k)
	}
}

func TestListenCounterNoAlloc(t *testing.T) {
	_, fd := newCountersPage(t)
	ln, err := listenCounting(t, itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	cl := ln.(*countingListener)
	if cl.counter == nil {
		t.Fatal("no counter")
	}
	if n := testing.AllocsPerRun(1000, func() { cl.counter.Accept(cl.index) }); n != 0 {
		t.Errorf("counting an accept allocates %v times", n)
	}
}

func TestListenCountersFD(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		wantErr bool
	}{
		{name: "not a number", value: "three", wantErr: true},
		{name: "negative", value: "-1", wantErr: true},
		{name: "not mapped", value: "99999"},
		{name: "stdin", value: "0"},
		{name: "empty", value: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := listenCounting(t, tt.value)
			if tt.wantErr {
				if err == nil {
					t.Fatal("Listen: no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ln.(*countingListener).counter != nil {
				t.Error("counter set without a page")
			}
		})
	}
}

// itoa formats an fd for the environment.
func itoa(fd int) string { return strconv.Itoa(fd) }
