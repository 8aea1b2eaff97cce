package supervisor

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of Config, as documented in the README. Control has
// no default here: its path depends on the user's runtime directory,
// which is the command line's business.
const (
	DefaultListen       = "127.0.0.1:8080"
	DefaultReadyTimeout = 10 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	DefaultSockets      = SocketsChild
	DefaultLogFormat    = "text"
	DefaultMetrics      = "127.0.0.1:9090"
	DefaultSteer        = SteerAuto
	DefaultChildOutput  = OutputInherit
	DefaultStrategy     = StrategyGeneration
	DefaultMaxSurge     = 1
	DefaultCanaryFor    = 30 * time.Second
	// DefaultMaxDraining is the default of --max-draining-generations.
	DefaultMaxDraining = 2
)

// Reload strategies (--reload-strategy): how a reload replaces the
// children.
const (
	// StrategyGeneration starts a whole new generation beside the old
	// one and drains the old one once every new child is ready.
	StrategyGeneration = "generation"
	// StrategyRolling replaces --max-surge slots at a time, each new
	// child ready before the old one of its slot drains.
	StrategyRolling = "rolling"
)

// Child output modes (--child-output): where what a child writes goes.
const (
	// OutputInherit gives the children the master's own stdout and
	// stderr.
	OutputInherit = "inherit"
	// OutputPrefix copies each line a child writes to the master's stdout
	// or stderr, prefixed with the child's slot and pid.
	OutputPrefix = "prefix"
)

// Steering modes (--steer): whether new connections are steered away from
// a slot whose child is stuck or missing.
const (
	// SteerAuto steers where it can: in master socket mode, where the
	// program loads.
	SteerAuto = "auto"
	// SteerOn steers, and refuses to start where it cannot.
	SteerOn = "on"
	// SteerOff leaves the choice to the kernel's hash.
	SteerOff = "off"
)

// Socket modes: who binds the listeners.
const (
	// SocketsChild makes every child bind its own SO_REUSEPORT listener.
	SocketsChild = "child"
	// SocketsMaster makes the master bind one listener per slot and pass it
	// to the children of that slot by socket activation.
	SocketsMaster = "master"
)

// MinWatchdog is the shortest watchdog period Validate accepts.
const MinWatchdog = 100 * time.Millisecond

// MaxWorkers bounds Config.Workers; it is far above any sensible process
// count and only catches typing errors.
const MaxWorkers = 4096

// Config is everything a supervisor needs to run. Fill it from
// DefaultConfig, then from a config file, the environment and flags, in
// rising order of precedence, and check it with Validate. Each field is
// set by one Setting (settings.go), which names its flag, variable and
// key: a new field needs a new entry there.
type Config struct {
	// Workers is the number of children per generation (slots 0..Workers-1).
	Workers int
	// Listen are the addresses the children serve, in order (at least
	// one; names unique).
	Listen Listeners
	// ReadyTimeout is how long a new child has to send READY=1.
	ReadyTimeout time.Duration
	// DrainTimeout is how long a draining child has before SIGKILL.
	DrainTimeout time.Duration
	// Sockets is SocketsChild or SocketsMaster.
	Sockets string
	// LogFormat is "text" or "json"; the master's log handler follows it.
	LogFormat string
	// Command is the program and arguments started once per slot.
	Command []string
	// Control is the path of the admin API's unix socket; "" turns it off.
	Control string
	// Metrics is the TCP address of /metrics, /healthz and /readyz; ""
	// turns it off.
	Metrics string
	// Watchdog is how long a child that has sent WATCHDOG=1 may then stay
	// silent before it is sent SIGQUIT, then SIGKILL, and replaced; 0
	// turns the watchdog off. Children are told it in WATCHDOG_USEC.
	Watchdog time.Duration
	// MaxAccepts replaces a child, its successor ready first, once it has
	// accepted this many connections plus a jitter of up to 10%; 0 is off.
	MaxAccepts uint64
	// MaxRSS replaces a child the same way once its resident memory passes
	// this many bytes; 0 is off.
	MaxRSS uint64
	// User and Group are who the children run as (a name or a number);
	// "" keeps the master's own. A user alone brings its primary group.
	User  string
	Group string
	// Steer is SteerAuto, SteerOn or SteerOff.
	Steer string
	// Ready is how the master learns that a new child is ready.
	Ready Readiness
	// StopSignal is what a child is sent to drain: on a reload, a
	// recycle, a scale-down and a graceful stop.
	StopSignal unix.Signal
	// ChildOutput is OutputInherit or OutputPrefix.
	ChildOutput string
	// Env is added to every child's environment; its values may hold the
	// same placeholders as the command's arguments.
	Env map[string]string
	// ReloadStrategy is StrategyGeneration or StrategyRolling; ""
	// reads as StrategyGeneration.
	ReloadStrategy string
	// MaxSurge is how many slots a rolling reload replaces at once; 0
	// reads as DefaultMaxSurge.
	MaxSurge int
	// Canary is how many slots a reload replaces first and watches for
	// CanaryFor before it replaces the rest; 0 is off.
	Canary    int
	CanaryFor time.Duration
	// MaxDrainingGenerations caps the generations draining at once: a
	// reload that would pass it first kills the oldest draining one. 0
	// reads as DefaultMaxDraining.
	MaxDrainingGenerations int
}

// DefaultConfig returns the documented defaults. Command is left to the
// caller, since its default depends on where the master binary lives.
func DefaultConfig() Config {
	return Config{
		// GOMAXPROCS, unlike NumCPU, follows a container's CPU quota.
		Workers:      runtime.GOMAXPROCS(0),
		Listen:       Listeners{{Name: DefaultListenerName, Network: NetTCP, Addr: DefaultListen}},
		ReadyTimeout: DefaultReadyTimeout,
		DrainTimeout: DefaultDrainTimeout,
		Sockets:      DefaultSockets,
		LogFormat:    DefaultLogFormat,
		Metrics:      DefaultMetrics,
		Steer:        DefaultSteer,
		Ready:        Readiness{Mode: ReadyNotify},
		StopSignal:   unix.SIGTERM,
		ChildOutput:  OutputInherit,

		ReloadStrategy:         DefaultStrategy,
		MaxSurge:               DefaultMaxSurge,
		CanaryFor:              DefaultCanaryFor,
		MaxDrainingGenerations: DefaultMaxDraining,
	}
}

// Validate reports the first thing wrong with c, phrased for an operator.
// It also checks that the command exists and is executable.
func (c Config) Validate() error {
	if c.Workers < 1 || c.Workers > MaxWorkers {
		return fmt.Errorf("workers: %d is out of range 1..%d", c.Workers, MaxWorkers)
	}
	if err := c.Listen.validate(); err != nil {
		return err
	}
	for _, l := range c.Listen {
		if l.Network != NetTCP {
			continue // the metrics endpoint is TCP: a UDP port is apart
		}
		if err := checkMetricsApart(c.Metrics, l.Addr); err != nil {
			return err
		}
	}
	if c.ReadyTimeout <= 0 {
		return fmt.Errorf("ready-timeout: %v must be positive", c.ReadyTimeout)
	}
	if c.DrainTimeout <= 0 {
		return fmt.Errorf("drain-timeout: %v must be positive", c.DrainTimeout)
	}
	switch c.Sockets {
	case SocketsChild:
	case SocketsMaster:
	default:
		return fmt.Errorf("sockets: %q is not child or master", c.Sockets)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("log-format: %q is not text or json", c.LogFormat)
	}
	if c.Watchdog < 0 {
		return fmt.Errorf("watchdog: %v must not be negative (0 turns it off)", c.Watchdog)
	}
	if c.Watchdog > 0 && c.Watchdog < MinWatchdog {
		// The children ping every half period; below this, a busy
		// machine's scheduling delays alone would look like a hang.
		return fmt.Errorf("watchdog: %v is below the minimum of %v", c.Watchdog, MinWatchdog)
	}
	switch c.Steer {
	case SteerAuto, SteerOff, SteerOn:
	default:
		return fmt.Errorf("steer: %q is not auto, on or off", c.Steer)
	}
	switch c.ChildOutput {
	case OutputInherit, OutputPrefix:
	default:
		return fmt.Errorf("child-output: %q is not inherit or prefix", c.ChildOutput)
	}
	if c.Ready.Mode == ReadyDelay && c.Ready.Delay >= c.ReadyTimeout {
		// The ready timeout would kill every child before its delay ends.
		return fmt.Errorf("ready: delay:%v is not shorter than the ready timeout (%v): shorten the delay or raise --ready-timeout", c.Ready.Delay, c.ReadyTimeout)
	}
	if err := c.checkRollout(); err != nil {
		return err
	}
	if len(c.Command) == 0 || c.Command[0] == "" {
		return errors.New("command: none given")
	}
	for _, arg := range c.Command[1:] {
		if err := c.checkTemplate(arg); err != nil {
			return fmt.Errorf("command: argument %q: %w", arg, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Env)) {
		if err := checkEnvName(k); err != nil {
			return fmt.Errorf("env: %w", err)
		}
		if err := c.checkTemplate(c.Env[k]); err != nil {
			return fmt.Errorf("env: %s: %w", k, err)
		}
	}
	if _, err := exec.LookPath(c.Command[0]); err != nil {
		return fmt.Errorf("command: %w", err)
	}
	return nil
}

// checkRollout checks the settings of how a reload replaces the
// children.
func (c Config) checkRollout() error {
	switch c.ReloadStrategy {
	case "", StrategyGeneration, StrategyRolling:
	default:
		return fmt.Errorf("reload-strategy: %q is not generation or rolling", c.ReloadStrategy)
	}
	if c.MaxSurge < 0 || c.MaxSurge > MaxWorkers {
		return fmt.Errorf("max-surge: %d is out of range 1..%d", c.MaxSurge, MaxWorkers)
	}
	if c.Canary < 0 || c.Canary > MaxWorkers {
		return fmt.Errorf("canary: %d is out of range 0..%d (0 turns it off)", c.Canary, MaxWorkers)
	}
	if c.CanaryFor < 0 {
		return fmt.Errorf("canary-for: %v must not be negative", c.CanaryFor)
	}
	if c.MaxDrainingGenerations < 0 || c.MaxDrainingGenerations > MaxWorkers {
		return fmt.Errorf("max-draining-generations: %d is out of range 1..%d", c.MaxDrainingGenerations, MaxWorkers)
	}
	return nil
}

// strategy is c's reload strategy, its default filled in.
func (c Config) strategy() string { return cmp.Or(c.ReloadStrategy, DefaultStrategy) }

// surge is c's --max-surge, its default filled in.
func (c Config) surge() int { return cmp.Or(c.MaxSurge, DefaultMaxSurge) }

// maxDraining is c's --max-draining-generations, its default filled in.
func (c Config) maxDraining() int { return cmp.Or(c.MaxDrainingGenerations, DefaultMaxDraining) }

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("listen: %q is not host:port (%s)", addr, ae.Err)
		}
		return fmt.Errorf("listen: %q is not host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		// Port 0 would give every child a port of its own instead of one
		// shared address.
		return fmt.Errorf("listen: port %q of %q is not a number in 1..65535", port, addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("listen: host %q of %q is not an IP address", host, addr)
	}
	return nil
}

// checkMetricsApart refuses a metrics address that the children's
// listeners would share: the master's metrics socket, bound first
// without SO_REUSEPORT, would make every child fail to bind, or in master
// mode the master itself. Two addresses overlap on the same port when
// their hosts are equal or either is a wildcard; a metrics address that
// is not host:port is left to the bind to report.
func checkMetricsApart(metrics, listen string) error {
	if metrics == "" {
		return nil
	}
	mh, mp, err := net.SplitHostPort(metrics)
	if err != nil {
		return nil
	}
	lh, lp, _ := net.SplitHostPort(listen) // checked by validateListen
	if mp != lp || !hostsOverlap(mh, lh) {
		return nil
	}
	return fmt.Errorf("metrics: %s and listen %s share port %s: give the metrics endpoint a port of its own", metrics, listen, mp)
}

// hostsOverlap reports whether two listen hosts can claim the same
// socket address: equal, a wildcard, or localhost and a loopback address.
func hostsOverlap(a, b string) bool {
	norm := func(h string) net.IP {
		if h == "localhost" {
			return net.IPv4(127, 0, 0, 1)
		}
		return net.ParseIP(h)
	}
	ia, ib := norm(a), norm(b)
	if ia == nil || ib == nil || ia.IsUnspecified() || ib.IsUnspecified() {
		return true // "" (all interfaces), a wildcard, or a name we cannot compare
	}
	if a == "localhost" || b == "localhost" {
		return ia.IsLoopback() && ib.IsLoopback()
	}
	return ia.Equal(ib)
}
