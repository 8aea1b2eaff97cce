package supervisor

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The command's arguments and the env map's values may name what differs
// from child to child, so that a server that reads none of the PREFORK_*
// variables still gets them on its command line: --bind {listen}.
// `{{name}` is the literal `{name}`; any other brace ({fd: 3}, JSON, Go's
// {{.ID}}) is left as it is.

// placeholders are the names a template may use, in the order the docs
// list them.
var placeholders = []string{"listen", "host", "port", "slot", "generation", "workers"}

// perListener are the placeholders that also take a listener's name,
// {listen:NAME}; alone they are the first listener's.
var perListener = []string{"listen", "host", "port"}

// childValues returns the placeholders' values for one child.
func childValues(cfg Config, slot, generation int) map[string]string {
	v := map[string]string{
		"slot":       strconv.Itoa(slot),
		"generation": strconv.Itoa(generation),
		"workers":    strconv.Itoa(cfg.Workers),
	}
	for i, l := range cfg.Listen {
		host, port, _ := net.SplitHostPort(l.Addr)
		of := map[string]string{"listen": l.Addr, "host": host, "port": port}
		for _, name := range perListener {
			v[name+":"+l.Name] = of[name]
			if i == 0 {
				v[name] = of[name]
			}
		}
	}
	return v
}

// expand substitutes values into s. Names it does not know are left as
// written; checkTemplate refuses them before any child starts.
func expand(s string, values map[string]string) string {
	if !strings.Contains(s, "{") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		if _, n := escapedAt(s); n > 0 {
			b.WriteString(s[1:n]) // {{name} is {name}
			s = s[n:]
			continue
		}
		name, n := placeholderAt(s)
		if v, ok := values[name]; ok && n > 0 {
			b.WriteString(v)
			s = s[n:]
			continue
		}
		b.WriteByte('{')
		s = s[1:]
	}
}

// placeholderAt reads a placeholder at the start of s, which begins with
// '{': a name of lower-case letters and underscores, maybe followed by
// ':' and a listener's name, then '}'. It returns the name (with the
// listener's) and the length of the whole, or 0 when s does not start
// with one.
func placeholderAt(s string) (string, int) {
	colon := 0
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '}' && i > 1 && i != colon+1:
			return s[1:i], i + 1
		case c == ':' && colon == 0 && i > 1:
			colon = i
		case c >= 'a' && c <= 'z', c == '_':
		case colon > 0 && i > colon+1 && (c >= '0' && c <= '9' || c == '-'):
			// A listener's name starts with a letter: {port:80} is
			// no placeholder, and stays as written.
		default:
			return "", 0
		}
	}
	return "", 0
}

// escapedAt reads an escaped placeholder, {{name}, at the start of s; it
// returns the name and the length of the whole, or 0.
func escapedAt(s string) (string, int) {
	if !strings.HasPrefix(s, "{{") {
		return "", 0
	}
	name, n := placeholderAt(s[1:])
	if n == 0 {
		return "", 0
	}
	return name, n + 1
}

// checkTemplate refuses a placeholder that names nothing: {lisen} is a typo
// that would reach the server as it is, and so is {listen:NAME} for a
// listener that c does not have.
func (c Config) checkTemplate(s string) error {
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return nil
		}
		s = s[i:]
		if _, n := escapedAt(s); n > 0 {
			s = s[n:]
			continue
		}
		if name, n := placeholderAt(s); n > 0 {
			if err := c.knownPlaceholder(name); err != nil {
				return err
			}
		}
		s = s[1:]
	}
}

// knownPlaceholder refuses a placeholder name that c gives no value.
func (c Config) knownPlaceholder(name string) error {
	base, listener, named := strings.Cut(name, ":")
	switch {
	case !named && slices.Contains(placeholders, name):
		return nil
	case named && !slices.Contains(perListener, base):
		return nil // {fd:3} is no placeholder, and stays as written
	case named:
		if slices.ContainsFunc(c.Listen, func(l Listener) bool { return l.Name == listener }) {
			return nil
		}
		names := make([]string, len(c.Listen))
		for i, l := range c.Listen {
			names[i] = l.Name
		}
		return fmt.Errorf("placeholder {%s} names no listener (listeners: %s)", name, strings.Join(names, ", "))
	}
	return fmt.Errorf("unknown placeholder {%s} (known: {%s}, and {listen:NAME}, {host:NAME}, {port:NAME} of a named listener; write {{%s} for a literal {%s})",
		name, strings.Join(placeholders, "}, {"), name, name)
}

// checkEnvName refuses a variable the environment cannot hold, or one the
// master sets itself.
func checkEnvName(k string) error {
	switch {
	case k == "" || strings.ContainsAny(k, "=\x00"):
		return fmt.Errorf("%q is not a variable name", k)
	case strings.HasPrefix(k, "PREFORK_"), masterOwned(k):
		return fmt.Errorf("%s is set by the master for each child: leave it out", k)
	}
	return nil
}

// masterOwned reports whether the master sets k for a child itself (socket
// activation, sd_notify, the watchdog).
func masterOwned(k string) bool {
	switch k {
	case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID":
		return true
	}
	return false
}

// parseSignal reads a signal by name, with or without SIG (TERM, SIGQUIT,
// int), or by number.
func parseSignal(s string) (unix.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		if n, err := strconv.Atoi(s); err == nil && n > 0 && unix.SignalName(unix.Signal(n)) != "" {
			sig = unix.Signal(n)
		}
	}
	switch sig {
	case 0:
		return 0, fmt.Errorf("%q is not a signal name such as TERM, QUIT or INT", s)
	case unix.SIGKILL, unix.SIGSTOP:
		// Neither can be caught: the drain would be a kill or a freeze.
		return 0, fmt.Errorf("%s cannot be handled by the child, so it cannot drain (the drain timeout's SIGKILL follows anyway)", unix.SignalName(sig))
	}
	return sig, nil
}
