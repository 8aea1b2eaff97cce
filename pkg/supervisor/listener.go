package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prefork/prefork/pkg/sockopt"
)

// Networks of a listener.
const (
	// NetTCP is a stream listener: connections, accepted.
	NetTCP = "tcp"
	// NetUDP is a datagram socket: every child of a slot reads the same one.
	NetUDP = "udp"
)

// DefaultListenerName is the name of a --listen given without one.
const DefaultListenerName = "default"

// MaxListeners bounds the listeners of a configuration: each has a
// counter on the children's counter page (counters.MaxListeners).
const MaxListeners = 64

// listenerName is what a listener's name may be: it becomes part of an
// environment variable (PREFORK_LISTEN_<NAME>), a metric label and a
// LISTEN_FDNAMES entry, which may not hold ':'.
var listenerName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// Listener is one address the children serve: a --listen.
type Listener struct {
	// Name tells it apart in the children's environment, their
	// LISTEN_FDNAMES and the metrics' listener label.
	Name string
	// Network is NetTCP or NetUDP.
	Network string
	// Addr is host:port, port not 0.
	Addr string
}

// key is how the master's socket sets know the listener: the address as
// written, udp:// in front for a datagram socket. Two listeners with one
// key would be one socket; a name change alone keeps the sockets.
func (l Listener) key() string {
	if l.Network == NetUDP {
		return "udp://" + l.Addr
	}
	return l.Addr
}

// String is the listener as --listen takes it.
func (l Listener) String() string { return l.Name + "=" + l.key() }

// envName is the variable that carries the listener to a child:
// PREFORK_LISTEN_ and its name in upper case, '-' written '_'.
func (l Listener) envName() string {
	return "PREFORK_LISTEN_" + strings.ToUpper(strings.ReplaceAll(l.Name, "-", "_"))
}

// parseListener reads one --listen: [NAME=][udp://|tcp://]HOST:PORT. The
// address is checked by Validate (validateListen), so that a flag and a
// file report it alike.
func parseListener(s string) (Listener, error) {
	l := Listener{Network: NetTCP, Addr: s}
	// An IPv6 address holds ':' but never '=', so the first '=' ends
	// the name.
	if name, addr, ok := strings.Cut(s, "="); ok {
		if !listenerName.MatchString(name) {
			return Listener{}, fmt.Errorf("name %q of %q is not lower-case letters, digits, '_' and '-', starting with a letter, at most 32", name, s)
		}
		l.Name, l.Addr = name, addr
	}
	switch {
	case strings.HasPrefix(l.Addr, "udp://"):
		l.Network, l.Addr = NetUDP, strings.TrimPrefix(l.Addr, "udp://")
	case strings.HasPrefix(l.Addr, "tcp://"):
		l.Addr = strings.TrimPrefix(l.Addr, "tcp://")
	case strings.Contains(l.Addr, "://"):
		scheme, _, _ := strings.Cut(l.Addr, "://")
		return Listener{}, fmt.Errorf("%q: %s:// is not tcp:// or udp://", s, scheme)
	}
	return l, nil
}

// parseListeners reads the --listen flags, or the listen key's list, in
// order. One address may go without a name (it is named
// DefaultListenerName); several must each have one.
func parseListeners(list []string) (Listeners, error) {
	if len(list) == 0 {
		return nil, errors.New("no address given")
	}
	ls := make(Listeners, 0, len(list))
	for _, s := range list {
		l, err := parseListener(s)
		if err != nil {
			return nil, err
		}
		if l.Name == "" {
			if len(list) > 1 {
				return nil, fmt.Errorf("%q has no name: with several addresses, name each (--listen http=127.0.0.1:8080 --listen admin=127.0.0.1:8081)", s)
			}
			l.Name = DefaultListenerName
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// parseListenString reads --listen given once, or PREFORK_LISTEN: a
// comma-separated list (no address holds a comma).
func parseListenString(s string) (Listeners, error) {
	return parseListeners(strings.Split(s, ","))
}

// Listeners are the addresses the children serve, in the order given:
// listener i is the child's fd 3+i in master socket mode.
type Listeners []Listener

// String is the listeners as --listen takes them, comma-separated.
func (ls Listeners) String() string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = l.String()
	}
	return strings.Join(s, ",")
}

// first is the first listener, whose address PREFORK_LISTEN and {listen}
// carry; the zero Listener for none.
func (ls Listeners) first() Listener {
	if len(ls) == 0 {
		return Listener{}
	}
	return ls[0]
}

// primary is the listener steering and the rescue of stuck queues watch:
// the first stream one. ok is false when every listener is UDP.
func (ls Listeners) primary() (Listener, bool) {
	for _, l := range ls {
		if l.Network == NetTCP {
			return l, true
		}
	}
	return Listener{}, false
}

// primaryIndex is the index of primary in ls, or -1 when every listener
// is UDP.
func (ls Listeners) primaryIndex() int {
	return slices.IndexFunc(ls, func(l Listener) bool { return l.Network == NetTCP })
}

// has reports whether ls has a listener of key k.
func (ls Listeners) has(k string) bool {
	for _, l := range ls {
		if l.key() == k {
			return true
		}
	}
	return false
}

// sameSockets reports whether ls and o have the same sockets, whatever
// their names and order.
func (ls Listeners) sameSockets(o Listeners) bool {
	if len(ls) != len(o) {
		return false
	}
	for _, l := range ls {
		if !o.has(l.key()) {
			return false
		}
	}
	return true
}

// equal reports whether ls and o are the same list.
func (ls Listeners) equal(o Listeners) bool {
	if len(ls) != len(o) {
		return false
	}
	for i := range ls {
		if ls[i] != o[i] {
			return false
		}
	}
	return true
}

// validate checks every address, and that names and sockets are not
// given twice.
func (ls Listeners) validate() error {
	if len(ls) == 0 {
		return errors.New("listen: no address given")
	}
	if len(ls) > MaxListeners {
		return fmt.Errorf("listen: %d addresses, more than %d", len(ls), MaxListeners)
	}
	names, keys := make(map[string]string), make(map[string]string)
	for _, l := range ls {
		if err := validateListen(l.Addr); err != nil {
			return err
		}
		if l.Network != NetTCP && l.Network != NetUDP {
			return fmt.Errorf("listen: %s: network %q is not tcp or udp", l, l.Network)
		}
		if !listenerName.MatchString(l.Name) {
			return fmt.Errorf("listen: %q is not a listener name (lower-case letters, digits, '_' and '-', starting with a letter)", l.Name)
		}
		// Two names one variable apart (a-b, a_b) would overwrite each
		// other in the child's environment.
		if prev, ok := names[l.envName()]; ok {
			return fmt.Errorf("listen: %s and %s have the same name", prev, l)
		}
		if prev, ok := keys[l.key()]; ok {
			return fmt.Errorf("listen: %s and %s are the same socket", prev, l)
		}
		names[l.envName()], keys[l.key()] = l.String(), l.String()
	}
	return nil
}

// UnmarshalJSON reads the list, or the single address a master before
// named listeners wrote in its upgrade state.
func (ls *Listeners) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*ls = Listeners{{Name: DefaultListenerName, Network: NetTCP, Addr: one}}
		return nil
	}
	var list []Listener
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*ls = list
	return nil
}

// checkFree reports an error when l's address has a socket that a new
// reuseport group could not share.
func checkFree(l Listener) error {
	if l.Network == NetUDP {
		return sockopt.CheckFreePacket(l.Addr)
	}
	return sockopt.CheckFree(l.Addr)
}

// steerKey is the key of the listener that steering and the rescue of
// stuck queues watch (the primary one), or "" when every listener is UDP.
func (c Config) steerKey() string {
	if l, ok := c.Listen.primary(); ok {
		return l.key()
	}
	return ""
}

// countKey is one series of a slot's per-listener counts: a listener is
// known by its name and network, so that its count outlives the
// generations that served it.
type countKey struct {
	slot          int
	name, network string
}

func countKeyOf(slot int, l Listener) countKey {
	return countKey{slot: slot, name: l.Name, network: l.Network}
}
