package supervisor

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
)

// Caps on the connections the master's own servers keep open at once.
// Each open connection holds a descriptor of the master's, and the
// master needs descriptors to start children, so that fdBudget counts
// the caps: neither an idle client nor a hostile one can use up the
// descriptors a restart needs.
const (
	// MetricsConnCap bounds the open connections of the metrics endpoint.
	MetricsConnCap = 64
	// ControlConnCap bounds the open connections of the control socket.
	ControlConnCap = 16
)

// refusedLogEvery is how often at most a guarded listener logs what it
// refused; the line carries the count since the last one.
const refusedLogEvery = 10 * time.Second

// guardedListener hands its server only the connections it may take:
// only peers that check accepts, and no more than max open at once. At
// the cap, a new connection takes the place of the one idle longest
// (between requests, or yet to send one), so that idle clients cannot
// lock out a request; when every one is busy with a request, the new
// one is refused. What it refuses or evicts it closes at once, counts,
// and logs once per refusedLogEvery. Its server must report to track
// (http.Server.ConnState).
type guardedListener struct {
	net.Listener
	what  string               // "metrics" or "control", for the log
	max   int                  // the cap
	check func(net.Conn) error // nil: any peer
	log   *slog.Logger

	mu     sync.Mutex
	open   map[*guardedConn]struct{}
	since  map[string]int    // since the last line, by metrics.RefusalReasons
	logged time.Time         // when the last line was written
	total  map[string]uint64 // since the start, by metrics.RefusalReasons
}

// guard wraps ln with a cap of max open connections and a peer check.
func guard(ln net.Listener, what string, max int, check func(net.Conn) error, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: ln, what: what, max: max, check: check, log: log,
		open:  make(map[*guardedConn]struct{}),
		since: make(map[string]int), total: make(map[string]uint64)}
}

// guardedConn is an open connection of a guardedListener.
type guardedConn struct {
	net.Conn
	l     *guardedListener
	idle  bool      // between requests, or before the first; l.mu
	since time.Time // when it became idle; l.mu
	once  sync.Once
}

// Close closes the connection and gives its place back, once.
func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.open, c)
		c.l.mu.Unlock()
	})
	return err
}

// Accept returns the next connection the listener may take. Refused
// ones never reach the server; Accept goes on accepting, so that they
// do not wait in the backlog either.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.check != nil {
			if err := l.check(c); err != nil {
				c.Close()
				l.say(metrics.RefusedPeer, err.Error())
				continue
			}
		}
		if gc := l.admit(c); gc != nil {
			return gc, nil
		}
		c.Close()
		l.say(metrics.RefusedBusy, "every connection is busy with a request")
	}
}

// admit gives c a place, evicting the connection idle longest when at
// the cap; nil when every open one is busy.
func (l *guardedListener) admit(c net.Conn) *guardedConn {
	l.mu.Lock()
	var victim *guardedConn
	if len(l.open) >= l.max {
		for o := range l.open {
			if o.idle && (victim == nil || o.since.Before(victim.since)) {
				victim = o
			}
		}
		if victim == nil {
			l.mu.Unlock()
			return nil
		}
		delete(l.open, victim) // its place is the new one's from now
	}
	gc := &guardedConn{Conn: c, l: l, idle: true, since: time.Now()}
	l.open[gc] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		victim.Close()
		l.say(metrics.RefusedEvicted, "too many open connections: the one idle longest was closed")
	}
	return gc
}

// track follows the state of the server's connections: a connection
// that waits for a request may be evicted.
func (l *guardedListener) track(c net.Conn, st http.ConnState) {
	gc, ok := c.(*guardedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		gc.idle, gc.since = true, time.Now()
	case http.StateActive:
		gc.idle = false
	}
}

// say counts a connection refused for reason (one of
// metrics.RefusalReasons), and logs, at most once per refusedLogEvery,
// the counts by reason since the last line and why the last one was.
func (l *guardedListener) say(reason, why string) {
	l.mu.Lock()
	l.since[reason]++
	l.total[reason]++
	now := time.Now()
	if now.Sub(l.logged) < refusedLogEvery {
		l.mu.Unlock()
		return
	}
	attrs := []any{"endpoint", l.what}
	for _, r := range metrics.RefusalReasons {
		attrs = append(attrs, r, l.since[r])
	}
	attrs = append(attrs, "last", reason, "reason", why, "cap", l.max)
	clear(l.since)
	l.logged = now
	l.mu.Unlock()
	l.log.Warn("refused connections", attrs...)
}

// refusals returns what l refused since the start, every reason listed.
func (l *guardedListener) refusals() []metrics.Refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]metrics.Refusal, 0, len(metrics.RefusalReasons))
	for _, reason := range metrics.RefusalReasons {
		out = append(out, metrics.Refusal{Endpoint: l.what, Reason: reason, Count: l.total[reason]})
	}
	return out
}

// serve runs srv on l, which follows its connections, until srv is
// closed.
func (l *guardedListener) serve(srv *http.Server) {
	srv.ConnState = l.track
	srv.Serve(l)
}
