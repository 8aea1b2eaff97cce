package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prefork/prefork/pkg/logwriter"
	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/prefork/prefork/pkg/version"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "supervise COMMAND (default: the reference child beside master)",
		ArgsUsage: "[-- COMMAND [ARG...]]",
		Flags: append(settingFlags(), &cli.BoolFlag{Name: supervisor.UpgradeCheckFlag, Hidden: true,
			Usage: "check the state of an upgrade in place (" + supervisor.UpgradeStateEnv + ") and print this binary's version"}),
		OnUsageError: usageError,
		Action:       runAction,
	}
}

func runAction(c *cli.Context) error {
	stateFD, upgraded, err := upgradeState()
	if err != nil {
		return cli.Exit(err.Error(), exitFailure)
	}
	if c.Bool(supervisor.UpgradeCheckFlag) {
		if !upgraded {
			return cli.Exit("--"+supervisor.UpgradeCheckFlag+": no state in "+supervisor.UpgradeStateEnv, exitBadInput)
		}
		if err := supervisor.CheckUpgrade(stateFD); err != nil {
			return cli.Exit(err.Error(), exitFailure)
		}
		fmt.Println(version.String())
		return nil
	}
	cfg, err := loadConfig(c)
	if err != nil && !upgraded {
		return cli.Exit(err.Error(), exitBadInput)
	}
	log, logw := newLogger(cfg.LogFormat)
	defer flushLog(logw)
	opts := supervisor.Options{
		Log:        log,
		Load:       func() (supervisor.Config, error) { return loadConfig(c) },
		LogDropped: func() uint64 { return logw.Dropped().Lines },
		LogStalled: logw.Stalled,
		// Named in the error of a reload whose read of it hangs.
		ConfigFile: c.String(supervisor.ConfigSetting),
	}
	var sup *supervisor.Supervisor
	if upgraded {
		// Exec'd in place by an upgrade: the state says what runs; the
		// configuration is read again at the next reload.
		sup, err = supervisor.Resume(stateFD, opts)
	} else {
		sup, err = supervisor.New(cfg, opts)
	}
	if err != nil {
		return cli.Exit(err.Error(), exitBadInput)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	// TTIN and TTOU scale by one (caught, they cannot stop the master, their
	// default action); SIGPIPE is ignored so that a closed log reader
	// cannot kill it.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR2)
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case sig := <-sigs:
				log.Info("signal received", "signal", unix.SignalName(sig.(syscall.Signal)))
				switch sig {
				case syscall.SIGHUP:
					sup.RequestReload()
				case syscall.SIGUSR2:
					sup.RequestUpgrade()
				case syscall.SIGTTIN, syscall.SIGTTOU:
					delta := 1
					if sig == syscall.SIGTTOU {
						delta = -1
					}
					if res := sup.ScaleBy(delta); res.Err != nil {
						log.Error("scale refused", "signal", sig.String(), "err", res.Err)
					}
				case syscall.SIGQUIT:
					sup.Stop(supervisor.StopFast)
				default:
					sup.Stop(supervisor.StopGraceful)
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	// Where to reach it, so that a user of `make run` need not guess.
	log.Info("master started", "version", version.String(), "upgraded", upgraded, "pid", os.Getpid(), "workers", cfg.Workers, "listen", cfg.Listen.String(),
		"sockets", cfg.Sockets, "metrics", cfg.Metrics, "control", cfg.Control, "command", cfg.Command)
	err = sup.Run(ctx)
	code := exitCode(err)
	log.Info("master stopped", "exit_code", code)
	if err != nil {
		return cli.Exit(err.Error(), code)
	}
	return nil
}

// upgradeState returns the descriptor of the state an upgrade in place
// handed this master (UpgradeStateEnv), which it removes from the
// environment: the children must not see it.
func upgradeState() (fd int, ok bool, err error) {
	v, ok := os.LookupEnv(supervisor.UpgradeStateEnv)
	if !ok {
		return -1, false, nil
	}
	os.Unsetenv(supervisor.UpgradeStateEnv)
	fd, err = strconv.Atoi(v)
	if err != nil || fd < 3 {
		return -1, false, fmt.Errorf("%s=%q: not a descriptor", supervisor.UpgradeStateEnv, v)
	}
	return fd, true, nil
}

// loadConfig builds the configuration: defaults, then the config file,
// then environment and flags (urfave/cli already lets a flag beat its
// variable).
func loadConfig(c *cli.Context) (supervisor.Config, error) {
	cfg := supervisor.DefaultConfig()
	cmd, err := defaultCommand()
	if err != nil {
		return cfg, err
	}
	cfg.Command = cmd
	cfg.Control = defaultControl() // the file may turn it off with ""
	if path := c.String(supervisor.ConfigSetting); path != "" {
		if err := supervisor.LoadConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	if err := applyFlags(c, &cfg); err != nil {
		return cfg, err
	}
	if c.Args().Present() {
		cfg.Command = c.Args().Slice()
	}
	return cfg, cfg.Validate()
}

// settingFlags are the flags of `master run`, one per setting that is a
// flag. They are strings, parsed by the setting rather than by urfave/cli,
// so that a bad value is reported in the same words wherever it came from;
// they have no Value, so that only a flag or variable that was set
// overrides the config file.
func settingFlags() []cli.Flag {
	var flags []cli.Flag
	for _, s := range supervisor.Settings() {
		if !s.Flag() {
			continue
		}
		if s.Repeat {
			flags = append(flags, &settingListFlag{
				StringSliceFlag: cli.StringSliceFlag{Name: s.Name, Usage: s.Usage, DefaultText: s.Default, EnvVars: []string{s.Env}},
				metavar:         s.Metavar,
			})
			continue
		}
		flags = append(flags, &settingFlag{
			StringFlag: cli.StringFlag{Name: s.Name, Usage: s.Usage, DefaultText: s.Default, EnvVars: []string{s.Env}},
			metavar:    s.Metavar,
		})
	}
	return flags
}

// settingListFlag is settingFlag for a setting given once per value
// (--listen a --listen b); its variable is a comma-separated list.
type settingListFlag struct {
	cli.StringSliceFlag
	metavar string
}

// String is the flag's line in --help.
func (f *settingListFlag) String() string {
	return helpLine(f.Name, f.metavar+" (repeatable)", f.Usage, f.DefaultText, f.EnvVars)
}

// settingFlag is a string flag whose help line names its value by the
// setting's metavar (--workers N) where urfave/cli would write "value".
type settingFlag struct {
	cli.StringFlag
	metavar string
}

// String is the flag's line in --help.
func (f *settingFlag) String() string {
	return helpLine(f.Name, f.metavar, f.Usage, f.DefaultText, f.EnvVars)
}

// helpLine is a setting's line in --help.
func helpLine(name, metavar, usage, def string, env []string) string {
	line := fmt.Sprintf("--%s %s\t%s", name, metavar, usage)
	if def != "" {
		line += fmt.Sprintf(" (default: %s)", def)
	}
	return line + fmt.Sprintf(" [$%s]", strings.Join(env, ", $"))
}

// applyFlags copies the flags and variables that were set over cfg
// (urfave/cli already lets a flag beat its variable).
func applyFlags(c *cli.Context, cfg *supervisor.Config) error {
	for _, s := range supervisor.Settings() {
		// --config was read first, by loadConfig.
		if !s.Flag() || s.Name == supervisor.ConfigSetting || !c.IsSet(s.Name) {
			continue
		}
		var err error
		if s.Repeat {
			err = s.SetList(cfg, c.StringSlice(s.Name))
		} else {
			err = s.Set(cfg, c.String(s.Name))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseInt reads a whole number given to name, in the words of the
// workers setting (`master scale N`).
func parseInt(name, s string) (int, error) {
	n, err := supervisor.ParseWhole(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

// defaultCommand is the reference child installed beside the master.
func defaultCommand() ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the default command: %w", err)
	}
	return []string{filepath.Join(filepath.Dir(self), "child")}, nil
}

// newLogger returns the master's logger, and the writer under it to
// flush at exit. Its lines go to stderr through a bounded buffer that a
// goroutine of its own writes: stderr is shared with the children
// (--child-output inherit) and may not be read, and a log line must never
// delay the event loop. What the buffer cannot hold is dropped, counted
// (prefork_log_dropped_total) and said, by a line in the same format,
// once stderr takes lines again.
func newLogger(format string) (*slog.Logger, *logwriter.Writer) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	handler := func(w io.Writer) slog.Handler {
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	w := logwriter.New(os.Stderr, logwriter.Options{Notice: logwriter.SlogNotice(handler)})
	log := slog.New(handler(w))
	// What the standard library logs (net/http's errors of the admin and
	// metrics servers) goes the same way, in the same format, instead of
	// to stderr directly, where it would block on a stderr nobody reads.
	slog.SetDefault(log)
	return log, w
}

// logFlushTimeout bounds how long the master's exit waits for its last
// log lines: enough for a healthy stderr, and a stderr nobody reads must
// not hold up the exit.
const logFlushTimeout = 2 * time.Second

// flushLog writes the log lines still buffered, at most logFlushTimeout.
// If stderr is stuck, there is nowhere to say what was left: stderr is
// where it would go.
func flushLog(w *logwriter.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), logFlushTimeout)
	defer cancel()
	if w.Close(ctx) != nil {
		stderrStuck.Store(true)
	}
}

// stderrStuck is set when the log could not be flushed in time: the last
// error line is not tried then, so that the exit waits logFlushTimeout
// once, not twice.
var stderrStuck atomic.Bool

// exitCode says why the master stopped (see the README's exit status
// table): a container runtime or systemd shows nothing else.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, supervisor.ErrDrainCut):
		return exitDrainCut
	}
	return exitFailure
}
