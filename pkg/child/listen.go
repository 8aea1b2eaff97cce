package child

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/sockopt"
)

// Variables of the systemd socket-activation protocol (sd_listen_fds(3)).
const (
	envListenFDs     = "LISTEN_FDS"
	envListenPID     = "LISTEN_PID"
	envListenFDNames = "LISTEN_FDNAMES"
)

// envCountersFD names the inherited descriptor of the master's counters
// page (docs/socket-modes.md, "The child contract"; package counters has
// its layout).
const envCountersFD = "PREFORK_COUNTERS_FD"

// listenFD is SD_LISTEN_FDS_START, the first inherited listener.
const listenFD = 3

// fallbackAddr is bound when neither socket activation nor PREFORK_LISTEN
// names a socket, so the binary also runs on its own.
const fallbackAddr = "127.0.0.1:8080"

// Listen returns the listener the child serves on, in this order: the
// socket inherited as fd 3 when LISTEN_FDS=1 and LISTEN_PID is this
// process (the LISTEN_* variables are then unset so no grandchild takes
// them for its own); else PREFORK_LISTEN bound with SO_REUSEPORT; else
// 127.0.0.1:8080. LISTEN_FDS other than 0 or 1 for this process is an
// error: the master passes exactly one socket. ctx bounds binding only.
//
// When PREFORK_COUNTERS_FD names an inherited counters page, every
// accepted connection is counted on it (one atomic add, no syscall) and
// the variable is unset so no grandchild takes it. A value that is not a
// non-negative decimal is an error; a page that cannot be mapped is not:
// the child then serves without counting, and its accepts read as 0.
func Listen(ctx context.Context) (net.Listener, error) {
	src, err := listenSource(os.LookupEnv, os.Getpid())
	if err != nil {
		return nil, err
	}
	countersFD, hasCounters, err := countersSource(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	if src.inherited {
		ln, err = inheritListener()
	} else {
		ln, err = bindListener(ctx, src.addr)
	}
	if err != nil {
		return nil, err
	}
	cl := &countingListener{Listener: ln}
	if hasCounters {
		cl.onAccept = openCounter(countersFD)
	}
	return cl, nil
}

// countersSource reads PREFORK_COUNTERS_FD; unset or empty means no page.
func countersSource(lookup lookupFunc) (fd int, ok bool, err error) {
	s, ok := nonEmpty(lookup, envCountersFD)
	if !ok {
		return 0, false, nil
	}
	fd, err = strconv.Atoi(s)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %w", envCountersFD, err)
	}
	if fd < 0 {
		return 0, false, fmt.Errorf("parse %s=%q: must not be negative", envCountersFD, s)
	}
	return fd, true, nil
}

// openCounter maps the counters page at fd and unsets
// PREFORK_COUNTERS_FD. It returns the hook that counts one accept, or nil
// when the page cannot be mapped (fd is then left alone: it may be
// something else). The hook is a method value: calling it allocates
// nothing.
func openCounter(fd int) func() {
	_ = os.Unsetenv(envCountersFD) // fails only for an invalid name
	c, err := counters.OpenCounter(fd)
	if err != nil {
		return nil
	}
	return c.Inc
}

// source says where the listener comes from: fd 3, or an address to bind.
type source struct {
	inherited bool
	addr      string
}

// listenSource decides, from the environment alone, where Listen gets its
// socket. LISTEN_* variables meant for another pid are ignored, as
// sd_listen_fds does, so a variable leaked from an ancestor is harmless.
func listenSource(lookup lookupFunc, pid int) (source, error) {
	mine, err := activatedFor(lookup, pid)
	if err != nil {
		return source{}, err
	}
	if mine {
		return source{inherited: true}, nil
	}
	if addr, ok := nonEmpty(lookup, envListen); ok {
		return source{addr: addr}, nil
	}
	return source{addr: fallbackAddr}, nil
}

// activatedFor reports whether LISTEN_FDS passes one socket to pid.
func activatedFor(lookup lookupFunc, pid int) (bool, error) {
	fds, ok := nonEmpty(lookup, envListenFDs)
	if !ok {
		return false, nil
	}
	pidStr, ok := nonEmpty(lookup, envListenPID)
	if !ok {
		return false, nil
	}
	target, err := strconv.Atoi(pidStr)
	if err != nil {
		return false, fmt.Errorf("parse %s: %w", envListenPID, err)
	}
	if target != pid {
		return false, nil
	}
	switch fds {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: want exactly one inherited socket", envListenFDs, fds)
}

// inheritListener takes over fd 3.
func inheritListener() (net.Listener, error) {
	if err := checkListening(listenFD); err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", listenFD, err)
	}
	f := os.NewFile(listenFD, "listen-fd-3")
	ln, err := net.FileListener(f) // a duplicate, close-on-exec
	// Close fd 3 through its *os.File, never by number: the File's
	// finalizer would later close whatever reused number 3, such as an
	// accepted connection (TRAPS 4). Never call f.Fd() either: it would
	// switch the socket, which the master shares, to blocking (TRAPS 5).
	cerr := f.Close()
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d: %w", listenFD, err)
	}
	if cerr != nil {
		ln.Close()
		return nil, fmt.Errorf("close inherited fd %d: %w", listenFD, cerr)
	}
	if err := unsetActivation(); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// unsetActivation removes the LISTEN_* variables once fd 3 is taken, as
// sd_listen_fds(1) does, so a process this child starts does not claim it.
func unsetActivation() error {
	var errs []error
	for _, name := range []string{envListenFDs, envListenPID, envListenFDNames} {
		if err := os.Unsetenv(name); err != nil {
			errs = append(errs, fmt.Errorf("unset %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// bindListener binds addr with SO_REUSEADDR and SO_REUSEPORT.
func bindListener(ctx context.Context, addr string) (net.Listener, error) {
	ln, err := sockopt.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("bind listener: %w", err)
	}
	return ln, nil
}

// countingListener calls onAccept once per accepted connection:
// (*counters.Counter).Inc on the page of PREFORK_COUNTERS_FD, or nil when
// there is no page.
type countingListener struct {
	net.Listener
	onAccept func()
}

// Accept accepts a connection and counts it.
func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.onAccept != nil {
		l.onAccept()
	}
	return c, err
}
