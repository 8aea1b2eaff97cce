package supervisor

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Caps on the connections the master's own servers keep open at once.
// Each open connection holds a descriptor of the master's, and the
// master needs descriptors to start children: beyond the cap a new
// connection is accepted and closed at once, so that neither an idle
// client nor a hostile one can use up the descriptors a restart needs
// (the budget of fdBudget counts the caps).
const (
	// MetricsConnCap bounds the open connections of the metrics endpoint.
	MetricsConnCap = 64
	// ControlConnCap bounds the open connections of the control socket.
	ControlConnCap = 16
)

// refusedLogEvery is how often at most a guarded listener logs what it
// refused; the line carries the count since the last one.
const refusedLogEvery = 10 * time.Second

// guardedListener hands its server only the connections it may take: no
// more than cap open at once, and only peers that check accepts. What it
// refuses it closes at once, counts, and logs once per refusedLogEvery.
type guardedListener struct {
	net.Listener
	what  string               // "metrics" or "control", for the log
	slots chan struct{}        // one token per open connection
	check func(net.Conn) error // nil: any peer
	log   *slog.Logger

	mu      sync.Mutex
	refused int       // since the last line
	logged  time.Time // when the last line was written
}

// guard wraps ln with a cap of n open connections and a peer check.
func guard(ln net.Listener, what string, n int, check func(net.Conn) error, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: ln, what: what, slots: make(chan struct{}, n), check: check, log: log}
}

// Accept returns the next connection the listener may take. Refused
// ones never reach the server; the loop accepts on, so that they do not
// wait in the backlog either.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.check != nil {
			if err := l.check(c); err != nil {
				c.Close()
				l.refuse(err.Error())
				continue
			}
		}
		select {
		case l.slots <- struct{}{}:
			return &guardedConn{Conn: c, free: l.free}, nil
		default:
			c.Close()
			l.refuse("too many open connections")
		}
	}
}

func (l *guardedListener) free() { <-l.slots }

// refuse counts a refused connection and says so, at most once per
// refusedLogEvery, with the count since the last line.
func (l *guardedListener) refuse(why string) {
	l.mu.Lock()
	l.refused++
	now := time.Now()
	if now.Sub(l.logged) < refusedLogEvery {
		l.mu.Unlock()
		return
	}
	n := l.refused
	l.refused, l.logged = 0, now
	l.mu.Unlock()
	l.log.Warn("refused connections", "endpoint", l.what, "count", n, "reason", why, "cap", cap(l.slots))
}

// guardedConn gives its slot back when closed, once.
type guardedConn struct {
	net.Conn
	once sync.Once
	free func()
}

// Close closes the connection and frees its slot.
func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
