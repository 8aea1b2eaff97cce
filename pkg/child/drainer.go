package child

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// drainer tracks the connections of one http.Server through its ConnState
// hook and closes them as the drain allows. The drain loop alone closes
// connections; the hook only records states and wakes the loop.
type drainer struct {
	grace    time.Duration
	draining atomic.Bool   // read by every response
	changed  chan struct{} // buffered 1: a connection changed state

	mu    sync.Mutex
	conns map[net.Conn]*tracked
}

// tracked is a connection's last state and when it entered it.
type tracked struct {
	state   http.ConnState
	since   time.Time
	closing bool // the drain closed it; its StateClosed is pending
}

func newDrainer(grace time.Duration) *drainer {
	return &drainer{
		grace:   grace,
		changed: make(chan struct{}, 1),
		conns:   make(map[net.Conn]*tracked),
	}
}

// serve runs srv on ln until drain is closed, then drains.
func (d *drainer) serve(srv *http.Server, ln net.Listener, drain <-chan struct{}, timeout time.Duration) error {
	d.install(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-drain:
	}
	return d.drain(ln, served, timeout)
}

// install wraps srv's handler and chains its ConnState hook.
func (d *drainer) install(srv *http.Server) {
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = d.handler(h)
	user := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		d.track(c, s)
		if user != nil {
			user(c, s)
		}
	}
}

// handler gives every response a closeWriter.
func (d *drainer) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &closeWriter{ResponseWriter: w, draining: &d.draining}
		h.ServeHTTP(cw, r)
		// A handler that wrote nothing leaves the header to net/http,
		// which writes it after this returns.
		cw.mark()
	})
}

// track records a state change and wakes the drain loop.
func (d *drainer) track(c net.Conn, s http.ConnState) {
	now := time.Now()
	d.mu.Lock()
	switch s {
	case http.StateHijacked, http.StateClosed:
		delete(d.conns, c)
	default:
		t := d.conns[c]
		if t == nil {
			t = &tracked{}
			d.conns[c] = t
		}
		t.state, t.since = s, now
	}
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// drain stops accepting and waits for the connections to finish.
func (d *drainer) drain(ln net.Listener, served <-chan error, timeout time.Duration) error {
	start := time.Now()
	d.draining.Store(true) // before the close: no response escapes unmarked
	ln.Close()             // srv.Serve returns; its own close is a no-op
	deadline, stop := deadlineAfter(timeout)
	defer stop()
	// A connection accepted just before the close is tracked only once
	// srv.Serve has returned (it calls ConnState before its next Accept);
	// counting earlier could miss it (TRAPS 3).
	select {
	case <-served:
	case <-deadline:
		return d.cut(timeout)
	}
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		left, next := d.closeIdle(start, time.Now())
		if left == 0 {
			return nil
		}
		var wakeC <-chan time.Time
		if !next.IsZero() {
			wake.Reset(time.Until(next))
			wakeC = wake.C
		}
		select {
		case <-d.changed:
		case <-wakeC:
		case <-deadline:
			return d.cut(timeout)
		}
	}
}

// deadlineAfter returns a channel that fires after timeout, or never for
// a zero timeout, and a func to release its timer.
func deadlineAfter(timeout time.Duration) (<-chan time.Time, func()) {
	if timeout <= 0 {
		return nil, func() {}
	}
	t := time.NewTimer(timeout)
	return t.C, func() { t.Stop() }
}

// closeIdle closes the connections whose grace has run out and returns how
// many connections are left and when the next grace runs out (zero if no
// idle connection is waiting).
func (d *drainer) closeIdle(start, now time.Time) (left int, next time.Time) {
	var due []net.Conn
	d.mu.Lock()
	for c, t := range d.conns {
		if t.closing {
			continue
		}
		at, ok := closeAt(t.state, t.since, start, d.grace)
		if !ok {
			continue
		}
		if !now.Before(at) && requestArriving(c) {
			// Bytes wait in the socket: net/http is about to read a
			// request and mark the connection active. Look again soon.
			at = now.Add(arrivingRecheck)
		}
		if now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		t.closing = true
		due = append(due, c)
	}
	left = len(d.conns)
	d.mu.Unlock()
	// Closed outside the lock: a TLS close may write. The server's goroutine
	// sees the read fail and reports StateClosed, which wakes the loop.
	for _, c := range due {
		c.Close()
	}
	return left, next
}

// closeAt says when a connection in state s since since may be closed by
// a drain that started at start: after grace from the later of the two,
// and only when no request is in progress (StateNew has not read one yet,
// StateIdle is between requests).
func closeAt(s http.ConnState, since, start time.Time, grace time.Duration) (time.Time, bool) {
	if s != http.StateNew && s != http.StateIdle {
		return time.Time{}, false
	}
	from := start
	if since.After(start) {
		from = since
	}
	return from.Add(grace), true
}

// cut closes every connection left, in progress or not, at the deadline.
func (d *drainer) cut(timeout time.Duration) error {
	d.mu.Lock()
	conns := make([]net.Conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return fmt.Errorf("%w: %v passed, closed %d connections", ErrDrainTimeout, timeout, len(conns))
}

// count returns how many connections are tracked.
func (d *drainer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}
