package child

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"time"
)

// DrainGrace is how long a draining child leaves a connection that has no
// request in progress open, counted from the later of the drain start and
// the moment the connection became idle. A keep-alive client that sends its
// next request within the grace gets an answer (with Connection: close)
// instead of a reset; one silent for longer is taken to be done.
const DrainGrace = time.Second

// DeadlineMargin is how long after PREFORK_DRAIN_TIMEOUT the child cuts
// its drain itself.
const DeadlineMargin = time.Second

// ErrDrainTimeout is returned, wrapped, by Serve when PREFORK_DRAIN_TIMEOUT
// passed before every connection finished; those left were closed.
var ErrDrainTimeout = errors.New("drain timeout")

// Serve serves HTTP/1.x on ln until Draining is closed, then drains as
// the child contract says (docs/socket-modes.md) and returns nil once no
// connection is left:
//
//   - ln is closed, so the child stops accepting;
//   - every response whose header is written from then on carries
//     "Connection: close", so net/http closes its connection after it;
//   - a connection with no request in progress is closed once it has been
//     idle for DrainGrace; one with a request in progress never is;
//   - when PREFORK_DRAIN_TIMEOUT (plus DeadlineMargin) is set and passes
//     first, every connection left is closed and the error wraps
//     ErrDrainTimeout.
//
// Serve neither calls srv.Shutdown nor disables keep-alives: both close
// idle connections at once and drop the requests clients are sending on
// them. It wraps srv.Handler (nil means http.DefaultServeMux) and chains
// srv.ConnState, so set both before calling. Hijacked connections are the
// handler's own and are not waited for. If srv.Serve fails before the
// drain, its error is returned wrapped.
func Serve(srv *http.Server, ln net.Listener) error {
	return ServeContext(context.Background(), srv, ln)
}

// ServeContext is Serve that also starts draining when ctx is done.
func ServeContext(ctx context.Context, srv *http.Server, ln net.Listener) error {
	timeout, err := drainTimeout(os.LookupEnv)
	if err != nil {
		return err
	}
	if timeout > 0 {
		// Under a master, its SIGKILL at the drain timeout decides, and it
		// then knows the drain was cut (its exit status says so); the
		// child's own deadline, a little later, is for when no master is
		// left to enforce it.
		timeout += DeadlineMargin
	}
	signaled := Draining() // install the handlers before serving
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-signaled:
			cancel()
		case <-ctx.Done():
		}
	}()
	return serveUntil(srv, ln, ctx.Done(), DrainGrace, timeout)
}

// serveUntil is Serve with the drain trigger, grace and deadline as
// arguments, so tests drain without signaling the test process.
// A zero timeout means no deadline.
func serveUntil(srv *http.Server, ln net.Listener, drain <-chan struct{}, grace, timeout time.Duration) error {
	return newDrainer(grace).serve(srv, ln, drain, timeout)
}
