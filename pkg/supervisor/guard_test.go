package supervisor

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveGuarded serves h through a guard of cap n on a loopback port.
func serveGuarded(t *testing.T, n int, h http.Handler) string {
	t.Helper()
	addr, _ := serveLimited(t, n, h, masterServerLimits)
	return addr
}

// serveLimited is serveGuarded with the server's limits given; it also
// returns the guard, for a test to see what it tracks.
func serveLimited(t *testing.T, n int, h http.Handler, limits serverLimits) (string, *guardedListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(h, slog.New(slog.DiscardHandler), limits)
	g := guard(ln, "test", n, nil, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.serve(srv)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), g
}

// waitIdle waits until g counts n of its connections idle. A client
// has its answer before the server marks the connection idle, so a
// test that relies on which one is idle longest must wait for it.
func waitIdle(t *testing.T, g *guardedListener, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		idle := 0
		for c := range g.open {
			if c.idle {
				idle++
			}
		}
		g.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections idle, want %d", idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// request sends a GET on c and returns the status line; "" when the
// connection was closed instead.
func request(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	return resp.Status
}

// Idle connections (issue 12, item 5) cannot lock a request out: at the
// cap, a new connection takes the place of the one idle longest, which
// is closed.
func TestGuardEvictsIdle(t *testing.T) {
	t.Parallel()
	addr, g := serveLimited(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), masterServerLimits)
	var idle []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if st := request(t, c); st != "200 OK" {
			t.Fatalf("request = %q", st)
		}
		idle = append(idle, c)
		waitIdle(t, g, i+1) // the first idle longest, whatever the scheduler did
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st := request(t, c); st != "200 OK" {
		t.Errorf("request at the cap = %q, want 200 OK", st)
	}
	if st := request(t, idle[0]); st != "" {
		t.Errorf("the connection idle longest answered %q, want closed", st)
	}
}

// When every connection is busy with a request, a new one is closed at
// once instead of waiting.
func TestGuardRefusesWhenBusy(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	busy := make(chan struct{}, 2)
	addr := serveGuarded(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		busy <- struct{}{}
		<-release
	}))
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		<-busy
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("read on a connection beyond the cap: %v, want closed at once", err)
	}
}

// A request wrapped in untimed (POST /reload) is answered however long it
// takes, past the server's read and write deadlines, with its context
// alive; any other is cut at the write deadline.
func TestUntimedOutlivesDeadlines(t *testing.T) {
	t.Parallel()
	short := serverLimits{readHeader: 100 * time.Millisecond, read: 100 * time.Millisecond,
		write: 100 * time.Millisecond, idle: time.Second}
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(400 * time.Millisecond):
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}
	for _, tt := range []struct {
		name string
		h    http.HandlerFunc
		want bool
	}{
		{name: "untimed", h: untimed(slow), want: true},
		{name: "timed", h: slow, want: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := serveLimited(t, 4, tt.h, short)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			answered := request(t, c) == "200 OK"
			if answered != tt.want {
				t.Errorf("answered = %v, want %v", answered, tt.want)
			}
		})
	}
}
