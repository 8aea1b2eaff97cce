package supervisor

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Setting is one setting of `master run`, defined once. Its long flag and
// its config-file key are its Name; one parser reads it from the string
// form a flag, a variable or a config file gives, so a bad value is
// reported in the same words wherever it came from. cmd/master builds its
// flags and --help from Settings, ParseConfigFile looks keys up in it, and
// a test checks the README's flags table against it.
type Setting struct {
	// Name is the long flag (--Name) and the config-file key.
	Name string
	// Env is the environment variable: PREFORK_ and Name in upper snake
	// case. It is "" for a setting that is no flag (command).
	Env string
	// Metavar stands for the value in the docs: --workers N.
	Metavar string
	// Default is the default as a user reads it ("number of CPUs",
	// "off"); "" when there is none to show.
	Default string
	// Usage is the setting's meaning in one line, as --help shows it.
	Usage string
	// Reload tells whether a reload applies a change of the setting; the
	// others take effect at the next start (see keepStartOnly).
	Reload bool
	// Key tells whether the setting is a config-file key. --config is
	// not: a file does not name another file.
	Key bool
	// Repeat tells whether the flag may be given more than once (each
	// one a value of the list, read by SetList); its variable and a
	// single value in the file are a comma-separated list.
	Repeat bool

	bind binding
}

// binding ties a setting to its field of Config. A setting with no field
// (--config, read by the caller before anything else) has none.
type binding struct {
	// set parses the string form into the field.
	set func(c *Config, s string) error
	// setList takes a list (command, a YAML sequence, a repeated
	// flag); set, when not nil too, takes the single-value form.
	setList func(c *Config, list []string) error
	// setMap takes a mapping (env); set is nil then.
	setMap func(c *Config, m map[string]string) error
	// keep copies src's value into dst and reports whether they differed.
	keep func(dst, src *Config) bool
}

// ConfigSetting names the setting that points at the config file: a flag
// and a variable, but not a key, and not a field of Config.
const ConfigSetting = "config"

// settings is the table: the order of --help and of the README.
var settings = []Setting{
	{Name: "workers", Env: "PREFORK_WORKERS", Metavar: "N", Default: "number of CPUs", Reload: true, Key: true,
		Usage: "children per generation",
		bind:  field(func(c *Config) *int { return &c.Workers }, ParseWhole)},
	{Name: "listen", Env: "PREFORK_LISTEN", Metavar: "[NAME=]ADDR", Default: DefaultListen, Reload: true, Key: true, Repeat: true,
		Usage: "address the children serve: host:port, or udp://host:port for datagrams; repeat it, each with a name, for several (port 0 is refused: each child would get its own)",
		bind: binding{
			set:     func(c *Config, s string) (err error) { c.Listen, err = parseListenString(s); return err },
			setList: func(c *Config, list []string) (err error) { c.Listen, err = parseListeners(list); return err },
			keep: func(dst, src *Config) bool {
				same := dst.Listen.equal(src.Listen)
				dst.Listen = src.Listen
				return !same
			},
		}},
	// Reload: the file is read again on every reload (its path is not).
	{Name: ConfigSetting, Env: "PREFORK_CONFIG", Metavar: "FILE", Reload: true,
		Usage: "YAML file with the same keys as the long flags, plus command: [prog, arg...] and env: {NAME: value}; re-read on every reload"},
	{Name: "ready-timeout", Env: "PREFORK_READY_TIMEOUT", Metavar: "D", Default: DefaultReadyTimeout.String(), Reload: true, Key: true,
		Usage: "how long a new child has to be ready",
		bind:  field(func(c *Config) *time.Duration { return &c.ReadyTimeout }, parseDuration)},
	{Name: "drain-timeout", Env: "PREFORK_DRAIN_TIMEOUT", Metavar: "D", Default: DefaultDrainTimeout.String(), Reload: true, Key: true,
		Usage: "how long a draining child has before SIGKILL",
		bind:  field(func(c *Config) *time.Duration { return &c.DrainTimeout }, parseDuration)},
	{Name: "sockets", Env: "PREFORK_SOCKETS", Metavar: "MODE", Default: DefaultSockets, Reload: true, Key: true,
		Usage: "who binds the listeners: child or master",
		bind:  field(func(c *Config) *string { return &c.Sockets }, verbatim)},
	{Name: "metrics", Env: "PREFORK_METRICS", Metavar: "ADDR", Default: DefaultMetrics, Key: true,
		Usage: `HTTP address of /metrics, /healthz, /readyz ("" = off)`,
		bind:  field(func(c *Config) *string { return &c.Metrics }, verbatim)},
	{Name: "control", Env: "PREFORK_CONTROL", Metavar: "PATH", Key: true,
		// The command line computes it from the user's runtime directory.
		Default: "/run/prefork/prefork.sock for root, else $XDG_RUNTIME_DIR/prefork.sock, else /tmp/prefork-UID/prefork.sock",
		Usage:   `the admin API's unix socket ("" = off)`,
		bind:    field(func(c *Config) *string { return &c.Control }, verbatim)},
	{Name: "log-format", Env: "PREFORK_LOG_FORMAT", Metavar: "F", Default: DefaultLogFormat, Key: true,
		Usage: "text or json, on stderr",
		bind:  field(func(c *Config) *string { return &c.LogFormat }, verbatim)},
	{Name: "watchdog", Env: "PREFORK_WATCHDOG", Metavar: "D", Default: "off", Reload: true, Key: true,
		Usage: "kill and replace a child silent for D after a WATCHDOG=1 (minimum 100ms)",
		bind:  field(func(c *Config) *time.Duration { return &c.Watchdog }, parseDuration)},
	{Name: "max-accepts", Env: "PREFORK_MAX_ACCEPTS", Metavar: "N", Default: "off", Reload: true, Key: true,
		Usage: "replace a child after about N accepts, successor ready first",
		bind:  field(func(c *Config) *uint64 { return &c.MaxAccepts }, parseCount)},
	{Name: "max-rss", Env: "PREFORK_MAX_RSS", Metavar: "SIZE", Default: "off", Reload: true, Key: true,
		Usage: "replace a child whose resident memory passes SIZE (512MiB, 2G, 500MB or bytes)",
		bind:  field(func(c *Config) *uint64 { return &c.MaxRSS }, ParseSize)},
	{Name: "user", Env: "PREFORK_USER", Metavar: "U", Default: "the master's", Reload: true, Key: true,
		Usage: "run the children as U (name or uid)",
		bind:  field(func(c *Config) *string { return &c.User }, verbatim)},
	{Name: "group", Env: "PREFORK_GROUP", Metavar: "G", Default: "U's primary group", Reload: true, Key: true,
		Usage: "run the children with group G (name or gid)",
		bind:  field(func(c *Config) *string { return &c.Group }, verbatim)},
	{Name: "steer", Env: "PREFORK_STEER", Metavar: "MODE", Default: DefaultSteer, Key: true,
		Usage: "auto, on or off: steer new connections, and those queued, away from a stuck or missing child",
		bind:  field(func(c *Config) *string { return &c.Steer }, verbatim)},
	{Name: "ready", Env: "PREFORK_READY", Metavar: "MODE", Default: ReadyNotify, Reload: true, Key: true,
		Usage: "notify (READY=1), listen (the kernel shows it waiting for connections) or delay:D (alive after D)",
		bind:  field(func(c *Config) *Readiness { return &c.Ready }, ParseReadiness)},
	{Name: "stop-signal", Env: "PREFORK_STOP_SIGNAL", Metavar: "SIG", Default: "TERM", Reload: true, Key: true,
		Usage: "the signal that drains a child (QUIT for nginx, INT for lighttpd)",
		bind:  field(func(c *Config) *unix.Signal { return &c.StopSignal }, parseSignal)},
	{Name: "child-output", Env: "PREFORK_CHILD_OUTPUT", Metavar: "MODE", Default: DefaultChildOutput, Reload: true, Key: true,
		Usage: "inherit (the master's stdout and stderr) or prefix (each line prefixed with the child's slot and pid)",
		bind:  field(func(c *Config) *string { return &c.ChildOutput }, verbatim)},
	{Name: "reload-strategy", Env: "PREFORK_RELOAD_STRATEGY", Metavar: "MODE", Default: DefaultStrategy, Reload: true, Key: true,
		Usage: "generation (a whole new generation beside the old one) or rolling (--max-surge slots at a time, for hosts short of memory)",
		bind:  field(func(c *Config) *string { return &c.ReloadStrategy }, parseStrategy)},
	{Name: "max-surge", Env: "PREFORK_MAX_SURGE", Metavar: "N", Default: strconv.Itoa(DefaultMaxSurge), Reload: true, Key: true,
		Usage: "rolling reloads replace N slots at a time, each new child ready before the old one drains",
		bind:  field(func(c *Config) *int { return &c.MaxSurge }, parsePositive)},
	{Name: "canary", Env: "PREFORK_CANARY", Metavar: "N", Default: "off", Reload: true, Key: true,
		Usage: "a reload replaces N slots first and watches them for --canary-for before the rest; rolls them back if one fails",
		bind:  field(func(c *Config) *int { return &c.Canary }, parseNonNegative)},
	{Name: "canary-for", Env: "PREFORK_CANARY_FOR", Metavar: "D", Default: DefaultCanaryFor.String(), Reload: true, Key: true,
		Usage: "how long the canaries are watched (an exit, a missed watchdog, a stuck queue fails them)",
		bind:  field(func(c *Config) *time.Duration { return &c.CanaryFor }, parseDuration)},
	{Name: "max-draining-generations", Env: "PREFORK_MAX_DRAINING_GENERATIONS", Metavar: "N", Default: strconv.Itoa(DefaultMaxDraining), Reload: true, Key: true,
		Usage: "a reload that would leave more than N generations draining first kills the oldest",
		bind:  field(func(c *Config) *int { return &c.MaxDrainingGenerations }, parsePositive)},
	{Name: "env", Reload: true, Key: true,
		Usage: "variables added to every child's environment (in the file: env: {NAME: value}); values may hold placeholders",
		bind: binding{
			setMap: func(c *Config, m map[string]string) error { c.Env = m; return nil },
			keep: func(dst, src *Config) bool {
				same := maps.Equal(dst.Env, src.Env)
				dst.Env = src.Env
				return !same
			},
		}},
	{Name: "command", Reload: true, Key: true,
		Usage: "the program and its arguments, started once per slot (in the file: command: [prog, arg...])",
		bind: binding{
			setList: func(c *Config, list []string) error { c.Command = list; return nil },
			keep: func(dst, src *Config) bool {
				same := slices.Equal(dst.Command, src.Command)
				dst.Command = src.Command
				return !same
			},
		}},
}

// Settings returns the settings of `master run` in the order --help and
// the README list them. The slice is the caller's own.
func Settings() []Setting {
	return slices.Clone(settings)
}

// lookupSetting finds a setting by name.
func lookupSetting(name string) (Setting, bool) {
	i := slices.IndexFunc(settings, func(s Setting) bool { return s.Name == name })
	if i < 0 {
		return Setting{}, false
	}
	return settings[i], true
}

// Flag tells whether the setting is a flag of `master run` (and a
// variable); command is not, it follows "--".
func (s Setting) Flag() bool {
	return s.Env != ""
}

// Set parses value, the string form from a flag, a variable or a config
// file, into c. The error names the setting: `workers: "abc" is not a
// whole number`. Range and consistency checks are Config.Validate's.
func (s Setting) Set(c *Config, value string) error {
	if s.bind.set == nil {
		return fmt.Errorf("%s: is not set from a single string", s.Name)
	}
	if err := s.bind.set(c, value); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// SetList sets a setting that takes a list (Repeat, command) from its
// values in order. The error names the setting.
func (s Setting) SetList(c *Config, list []string) error {
	if s.bind.setList == nil {
		return fmt.Errorf("%s: is not set from a list", s.Name)
	}
	if err := s.bind.setList(c, list); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// field binds a setting to the field at returns, read by parse.
func field[T comparable](at func(*Config) *T, parse func(string) (T, error)) binding {
	return binding{
		set: func(c *Config, s string) error {
			v, err := parse(s)
			if err != nil {
				return err
			}
			*at(c) = v
			return nil
		},
		keep: func(dst, src *Config) bool {
			d, s := at(dst), at(src)
			differed := *d != *s
			*d = *s
			return differed
		},
	}
}

// keepStartOnly returns next with every setting a reload does not apply
// (the master's own sockets, log and steering: Reload false) taken from
// cur, and the names of those that differed, in table order. A reload
// warns about them: they take effect at the next start.
func keepStartOnly(cur, next Config) (Config, []string) {
	var kept []string
	for _, s := range settings {
		if s.Reload || s.bind.keep == nil {
			continue
		}
		if s.bind.keep(&next, &cur) {
			kept = append(kept, s.Name)
		}
	}
	return next, kept
}

// ParseWhole reads a whole number written plainly: 4, not +4, 04 or 4.0.
func ParseWhole(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// parseCount reads a whole number that may not be negative.
func parseCount(s string) (uint64, error) {
	n, err := ParseWhole(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%d must not be negative (0 turns it off)", n)
	}
	return uint64(n), nil
}

// parseStrategy reads a reload strategy, checked as it is read: a
// flag that overrides a bad value in the config file must not hide it.
func parseStrategy(s string) (string, error) {
	if s != StrategyGeneration && s != StrategyRolling {
		return "", fmt.Errorf("%q is not generation or rolling", s)
	}
	return s, nil
}

// parsePositive reads a whole number of at least 1.
func parsePositive(s string) (int, error) {
	n, err := ParseWhole(s)
	if err == nil && n < 1 {
		err = fmt.Errorf("%d must be at least 1", n)
	}
	return n, err
}

// parseNonNegative reads a whole number that may be 0 (off).
func parseNonNegative(s string) (int, error) {
	n, err := ParseWhole(s)
	if err == nil && n < 0 {
		err = fmt.Errorf("%d must not be negative (0 turns it off)", n)
	}
	return n, err
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 10s or 1m30s", s)
	}
	return d, nil
}

// verbatim takes a string setting as given; Config.Validate checks it.
func verbatim(s string) (string, error) {
	return s, nil
}
