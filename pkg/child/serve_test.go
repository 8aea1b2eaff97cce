package child

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A request in flight when the drain starts gets its answer, with
// Connection: close, and serve returns only after it. With an hour of grace,
// serve returning at all shows the response closed the connection; with a
// grace shorter than the request, that an active connection is never cut.
func TestServeDrainFinishesInFlightRequest(t *testing.T) {
	for _, grace := range []time.Duration{time.Hour, 20 * time.Millisecond} {
		t.Run("grace "+grace.String(), func(t *testing.T) { testInFlight(t, grace) })
	}
}

func testInFlight(t *testing.T, grace time.Duration) {
	started := make(chan struct{})
	finished := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond) // the work in flight
		io.WriteString(w, "slept\n")
		close(finished)
	})
	s := startServe(t, h, grace, 0)
	c := dial(t, s.addr)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := c.get("/")
		got <- result{resp, body, err}
	}()
	recv(t, "handler start", started)
	s.startDrain()

	r := recv(t, "response", got)
	if r.err != nil {
		t.Fatalf("in-flight request failed: %v", r.err)
	}
	if r.resp.StatusCode != http.StatusOK || r.body != "slept\n" {
		t.Fatalf("got %d %q, want 200 %q", r.resp.StatusCode, r.body, "slept\n")
	}
	if !r.resp.Close {
		t.Error("response written after the drain started lacks Connection: close")
	}
	if err := c.waitClosed(); err != nil {
		t.Error(err)
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("serve returned before the in-flight handler finished")
	}
}

// Keep-alive clients sending back to back see no error across the drain:
// each gets a response with Connection: close and then a clean close.
func TestServeDrainKeepAliveClientsSeeNoError(t *testing.T) {
	const clients = 8
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	s := startServe(t, h, DrainGrace, 0)

	var (
		served       atomic.Int64
		drainStarted atomic.Bool
		wg           sync.WaitGroup
		errs         = make(chan error, clients)
	)
	for range clients {
		c := dial(t, s.addr)
		wg.Go(func() { errs <- hammer(c, &served, &drainStarted) })
	}
	waitFor(t, "traffic before the drain", func() bool { return served.Load() >= 50*clients })
	s.startDrain()
	drainStarted.Store(true)

	for range clients {
		if err := recv(t, "a client to finish", errs); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if err := s.wait(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// hammer sends requests on c until a response says Connection: close, then
// expects the server to close the connection.
func hammer(c *rawClient, served *atomic.Int64, drainStarted *atomic.Bool) error {
	for {
		afterDrain := drainStarted.Load()
		resp, body, err := c.get("/")
		if err != nil {
			return err
		}
		served.Add(1)
		if resp.StatusCode != http.StatusOK || body != "ok\n" {
			return errors.New("unexpected response " + resp.Status)
		}
		if afterDrain && !resp.Close {
			return errors.New("response to a request sent after the drain started lacks Connection: close")
		}
		if resp.Close {
			return c.waitClosed()
		}
	}
}

// An idle keep-alive connection, and one that never sent a request, are
// closed by the server DrainGrace after the drain starts, not before.
func TestServeDrainClosesIdleAfterGrace(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	s := startServe(t, h, DrainGrace, 0)
	idle := dial(t, s.addr)
	if resp, _, err := idle.get("/"); err != nil || resp.Close {
		t.Fatalf("first request: resp %v, err %v; want a keep-alive response", resp, err)
	}
	silent := dial(t, s.addr)
	// Both must be accepted before the listener closes, or the second is
	// reset in the accept queue instead.
	waitFor(t, "both connections tracked", func() bool { return s.d.count() == 2 })

	start := s.startDrain()
	for name, c := range map[string]*rawClient{"idle": idle, "silent": silent} {
		if err := c.waitClosed(); err != nil {
			t.Fatalf("%s connection: %v", name, err)
		}
		if elapsed := time.Since(start); elapsed < DrainGrace*9/10 {
			t.Errorf("%s connection closed %v after the drain started, want about %v", name, elapsed, DrainGrace)
		}
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 5*DrainGrace {
		t.Errorf("serve returned %v after the drain started, want about %v", elapsed, DrainGrace)
	}
}

// The drain deadline cuts a request that outlives it.
func TestServeDrainTimeoutCutsLongRequest(t *testing.T) {
	const timeout = 300 * time.Millisecond
	started := make(chan struct{})
	handlerDone := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		close(started)
		select {
		case <-r.Context().Done(): // the cut closed the connection
		case <-time.After(waitTimeout):
		}
	})
	s := startServe(t, h, time.Hour, timeout)
	c := dial(t, s.addr)
	got := make(chan error, 1)
	go func() {
		_, _, err := c.get("/")
		got <- err
	}()
	recv(t, "handler start", started)
	start := s.startDrain()

	err := s.wait(t)
	if !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("serve: %v, want ErrDrainTimeout", err)
	}
	if elapsed := time.Since(start); elapsed < timeout*9/10 {
		t.Errorf("serve returned %v after the drain started, before the %v deadline", elapsed, timeout)
	}
	if err := recv(t, "client result", got); err == nil {
		t.Error("the cut request got a response")
	}
	recv(t, "handler to see the cut", handlerDone)
}

// A serve failure before any drain is returned, not swallowed.
func TestServeReturnsEarlyServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = serveUntil(&http.Server{ReadHeaderTimeout: time.Second}, ln, make(chan struct{}), DrainGrace, 0)
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("serve on a closed listener: %v, want net.ErrClosed", err)
	}
}

// The user's ConnState hook still sees every transition, and
// http.ResponseController still reaches the server's writer.
func TestServeKeepsUserHooks(t *testing.T) {
	var (
		mu     sync.Mutex
		states []http.ConnState
	)
	flushErr := make(chan error, 1)
	srv := &http.Server{
		ReadHeaderTimeout: waitTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
			flushErr <- http.NewResponseController(w).Flush()
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			mu.Lock()
			states = append(states, s)
			mu.Unlock()
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- serveUntil(srv, ln, drain, DrainGrace, 0) }()
	c := dial(t, ln.Addr().String())
	if _, _, err := c.get("/"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, "flush", flushErr); err != nil {
		t.Errorf("flush through the drain's writer: %v", err)
	}
	c.conn.Close()
	waitFor(t, "StateClosed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(states) > 0 && states[len(states)-1] == http.StateClosed
	})
	close(drain)
	if err := recv(t, "serve to return", done); err != nil {
		t.Fatalf("serve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateClosed}
	if len(states) != len(want) {
		t.Fatalf("user ConnState saw %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("user ConnState saw %v, want %v", states, want)
		}
	}
}

func TestCloseAt(t *testing.T) {
	start := time.Unix(1000, 0)
	const grace = time.Second
	tests := []struct {
		name   string
		state  http.ConnState
		since  time.Time
		want   time.Time
		wantOK bool
	}{
		{name: "idle before drain counts from drain start", state: http.StateIdle, since: start.Add(-time.Hour), want: start.Add(grace), wantOK: true},
		{name: "idle after drain counts from idle", state: http.StateIdle, since: start.Add(3 * time.Second), want: start.Add(4 * time.Second), wantOK: true},
		{name: "new without a request", state: http.StateNew, since: start.Add(-time.Minute), want: start.Add(grace), wantOK: true},
		{name: "active never", state: http.StateActive, since: start.Add(-time.Hour)},
		{name: "closed never", state: http.StateClosed, since: start},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := closeAt(tt.state, tt.since, start, grace)
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Fatalf("closeAt = (%v, %v), want (%v, %v)", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
