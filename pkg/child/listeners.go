package child

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/prefork/prefork/pkg/counters"
)

// Variables that name the child's listeners (docs/socket-modes.md, "The
// child contract").
const (
	// envListeners is the listeners' names in order, comma-separated.
	envListeners = "PREFORK_LISTENERS"
	// envListenPrefix, followed by a name upper-cased with '-' as '_',
	// is the variable of that listener's address.
	envListenPrefix = "PREFORK_LISTEN_"
)

// defaultName names the one listener of a child given no names.
const defaultName = "default"

// Networks of a listener.
const (
	netTCP = "tcp"
	netUDP = "udp"
)

// nameRE is the form of a listener name in PREFORK_LISTENERS.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// spec says where one listener comes from.
type spec struct {
	name string
	// network is netTCP or netUDP; for an inherited fd it is what its
	// PREFORK_LISTEN_<NAME> says, "" without one, and the socket's own
	// type decides once it is read (listenerSet.init).
	network string
	// addr is the address to bind, without its scheme; "" for an
	// inherited fd.
	addr string
	// fd is the inherited descriptor, or -1 when addr is to be bound.
	fd int
}

// table is the parsed environment: the listeners in counter order.
type table struct {
	specs []spec
	// activated reports that LISTEN_PID names this process, so the
	// LISTEN_* variables are its own to unset.
	activated bool
	// inherited is LISTEN_FDS when activated: fds 3..3+inherited-1 are
	// this process's, whether or not the rest of the table parsed.
	inherited int
}

// parseListeners reads the listener table from the environment alone.
// The order, and so each listener's counter, is PREFORK_LISTENERS; when
// that is unset, LISTEN_FDNAMES for a socket-activated process, else one
// listener "default" on PREFORK_LISTEN or fallbackAddr. LISTEN_*
// variables meant for another pid are ignored, as sd_listen_fds does, so
// a variable leaked from an ancestor is harmless.
func parseListeners(lookup lookupFunc, pid int) (table, error) {
	n, err := activation(lookup, pid)
	tab := table{activated: n >= 0, inherited: max(n, 0)}
	if err != nil {
		return tab, err
	}
	order, err := listenerOrder(lookup)
	if err != nil {
		return tab, err
	}
	switch {
	case n > 0:
		tab.specs, err = inheritedSpecs(lookup, order, n)
	case order != nil:
		tab.specs, err = boundSpecs(lookup, order)
	default:
		tab.specs, err = defaultSpec(lookup)
	}
	return tab, err
}

// activation returns LISTEN_FDS when LISTEN_PID is pid (0 included), or
// -1 when the variables are unset or meant for another process.
func activation(lookup lookupFunc, pid int) (int, error) {
	fds, ok := nonEmpty(lookup, envListenFDs)
	if !ok {
		return -1, nil
	}
	pidStr, ok := nonEmpty(lookup, envListenPID)
	if !ok {
		return -1, nil
	}
	target, err := strconv.Atoi(pidStr)
	if err != nil {
		return -1, fmt.Errorf("parse %s: %w", envListenPID, err)
	}
	if target != pid {
		return -1, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", envListenFDs, err)
	}
	if n < 0 || n > counters.MaxListeners {
		return 0, fmt.Errorf("parse %s=%q: want 0 to %d sockets", envListenFDs, fds, counters.MaxListeners)
	}
	return n, nil
}

// listenerOrder parses PREFORK_LISTENERS; nil when it is unset.
func listenerOrder(lookup lookupFunc) ([]string, error) {
	s, ok := nonEmpty(lookup, envListeners)
	if !ok {
		return nil, nil
	}
	names := strings.Split(s, ",")
	if len(names) > counters.MaxListeners {
		return nil, fmt.Errorf("parse %s: %d listeners, at most %d", envListeners, len(names), counters.MaxListeners)
	}
	vars := make(map[string]string, len(names))
	for _, name := range names {
		if !nameRE.MatchString(name) {
			return nil, fmt.Errorf("parse %s=%q: bad listener name %q (want %s)", envListeners, s, name, nameRE)
		}
		v := listenVar(name)
		if other, dup := vars[v]; dup {
			return nil, fmt.Errorf("parse %s=%q: listeners %q and %q both read %s", envListeners, s, other, name, v)
		}
		vars[v] = name
	}
	return names, nil
}

// listenVar is the variable of listener name's address.
func listenVar(name string) string {
	return envListenPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// inheritedSpecs maps the n inherited sockets to their listeners: by
// name through LISTEN_FDNAMES, or by position when it is unset. Without
// PREFORK_LISTENERS (a process socket-activated by systemd itself) the
// order is LISTEN_FDNAMES's, and a single unnamed socket is "default".
func inheritedSpecs(lookup lookupFunc, order []string, n int) ([]spec, error) {
	fdNames, err := listenFDNames(lookup, n)
	if err != nil {
		return nil, err
	}
	if order == nil {
		if fdNames == nil {
			if n > 1 {
				return nil, fmt.Errorf("%s=%d without %s: name the sockets", envListenFDs, n, envListenFDNames)
			}
			fdNames = []string{defaultName}
		}
		order = fdNames
	}
	if len(order) != n {
		return nil, fmt.Errorf("%s=%d but %s names %d listeners (%s)", envListenFDs, n, envListeners, len(order), strings.Join(order, ","))
	}
	if fdNames == nil {
		fdNames = order
	}
	fdOf := make(map[string]int, n)
	for j, name := range fdNames {
		fdOf[name] = listenFD + j
	}
	specs := make([]spec, 0, n)
	for _, name := range order {
		fd, ok := fdOf[name]
		if !ok {
			return nil, fmt.Errorf("listener %q: no inherited socket of that name in %s=%s", name, envListenFDNames, strings.Join(fdNames, ":"))
		}
		sp := spec{name: name, fd: fd}
		if v, ok := nonEmpty(lookup, listenVar(name)); ok {
			// A hint only: the socket's own type decides.
			sp.network, _, _ = splitAddress(v)
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

// listenFDNames parses LISTEN_FDNAMES for n sockets; nil when unset. The
// names must be unique: a listener is asked for by name.
func listenFDNames(lookup lookupFunc, n int) ([]string, error) {
	s, ok := nonEmpty(lookup, envListenFDNames)
	if !ok {
		return nil, nil
	}
	names := strings.Split(s, ":")
	if len(names) != n {
		return nil, fmt.Errorf("%s=%d but %s=%q names %d sockets", envListenFDs, n, envListenFDNames, s, len(names))
	}
	seen := make(map[string]bool, n)
	for _, name := range names {
		if name == "" || seen[name] {
			return nil, fmt.Errorf("parse %s=%q: empty or repeated name %q", envListenFDNames, s, name)
		}
		seen[name] = true
	}
	return names, nil
}

// boundSpecs reads each listener's PREFORK_LISTEN_<NAME>, for a child
// that binds its own sockets.
func boundSpecs(lookup lookupFunc, order []string) ([]spec, error) {
	specs := make([]spec, 0, len(order))
	for _, name := range order {
		v, ok := nonEmpty(lookup, listenVar(name))
		if !ok {
			return nil, fmt.Errorf("listener %q: %s is unset", name, listenVar(name))
		}
		network, addr, err := splitAddress(v)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %s: %w", name, listenVar(name), err)
		}
		specs = append(specs, spec{name: name, network: network, addr: addr, fd: -1})
	}
	return specs, nil
}

// defaultSpec is the single listener of a child given no names:
// PREFORK_LISTEN, else fallbackAddr.
func defaultSpec(lookup lookupFunc) ([]spec, error) {
	v, ok := nonEmpty(lookup, envListen)
	if !ok {
		v = fallbackAddr
	}
	network, addr, err := splitAddress(v)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %s: %w", defaultName, envListen, err)
	}
	return []spec{{name: defaultName, network: network, addr: addr, fd: -1}}, nil
}

// splitAddress reads host:port (TCP), tcp://host:port or udp://host:port.
func splitAddress(s string) (network, addr string, err error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return netTCP, s, nil
	}
	if scheme != netTCP && scheme != netUDP {
		return "", "", fmt.Errorf("address %q: unknown scheme %q (want tcp:// or udp://)", s, scheme)
	}
	if rest == "" {
		return "", "", fmt.Errorf("address %q: no host:port", s)
	}
	return scheme, rest, nil
}
