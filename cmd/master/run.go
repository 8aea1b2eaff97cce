package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "supervise COMMAND (default: the reference child beside master)",
		ArgsUsage: "[-- COMMAND [ARG...]]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "workers", Usage: "children per generation (default: number of CPUs)", EnvVars: []string{"PREFORK_WORKERS"}},
			&cli.StringFlag{Name: "listen", Usage: "address every child binds", Value: supervisor.DefaultListen, EnvVars: []string{"PREFORK_LISTEN"}},
			&cli.StringFlag{Name: "config", Usage: "YAML file with the same keys as the long flags", EnvVars: []string{"PREFORK_CONFIG"}},
			&cli.StringFlag{Name: "ready-timeout", Usage: "how long a new child has to say READY=1", Value: supervisor.DefaultReadyTimeout.String(), EnvVars: []string{"PREFORK_READY_TIMEOUT"}},
			&cli.StringFlag{Name: "drain-timeout", Usage: "how long a draining child has before SIGKILL", Value: supervisor.DefaultDrainTimeout.String(), EnvVars: []string{"PREFORK_DRAIN_TIMEOUT"}},
			&cli.StringFlag{Name: "sockets", Usage: "who binds the listeners: child or master", Value: supervisor.DefaultSockets, EnvVars: []string{"PREFORK_SOCKETS"}},
			controlFlag(),
			&cli.StringFlag{Name: "metrics", Usage: `HTTP address for /metrics, /healthz, /readyz ("" = off)`, Value: supervisor.DefaultMetrics, EnvVars: []string{"PREFORK_METRICS"}},
			&cli.StringFlag{Name: "log-format", Usage: "text or json, on stderr", Value: supervisor.DefaultLogFormat, EnvVars: []string{"PREFORK_LOG_FORMAT"}},
			&cli.StringFlag{Name: "watchdog", Usage: "kill and replace a child silent this long after a WATCHDOG=1 (default: off)", EnvVars: []string{"PREFORK_WATCHDOG"}},
			&cli.StringFlag{Name: "max-accepts", Usage: "replace a child after about N accepts, successor ready first (default: off)", EnvVars: []string{"PREFORK_MAX_ACCEPTS"}},
			&cli.StringFlag{Name: "max-rss", Usage: "replace a child whose resident memory passes SIZE, e.g. 512MiB (default: off)", EnvVars: []string{"PREFORK_MAX_RSS"}},
			&cli.StringFlag{Name: "user", Usage: "run the children as this user (name or uid)", EnvVars: []string{"PREFORK_USER"}},
			&cli.StringFlag{Name: "group", Usage: "run the children with this group (default: the user's)", EnvVars: []string{"PREFORK_GROUP"}},
			&cli.StringFlag{Name: "steer", Usage: "auto, on or off: steer new connections away from a stuck or missing child (master socket mode)", Value: supervisor.DefaultSteer, EnvVars: []string{"PREFORK_STEER"}},
		},
		OnUsageError: usageError,
		Action:       runAction,
	}
}

func runAction(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return cli.Exit(err.Error(), exitBadInput)
	}
	log := newLogger(cfg.LogFormat)
	sup, err := supervisor.New(cfg, supervisor.Options{
		Log:  log,
		Load: func() (supervisor.Config, error) { return loadConfig(c) },
	})
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
		syscall.SIGTTIN, syscall.SIGTTOU)
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case sig := <-sigs:
				log.Info("signal received", "signal", sig.String())
				switch sig {
				case syscall.SIGHUP:
					sup.RequestReload()
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

	log.Info("master started", "pid", os.Getpid(), "workers", cfg.Workers, "listen", cfg.Listen,
		"command", cfg.Command)
	err = sup.Run(ctx)
	code := exitCode(err)
	log.Info("master stopped", "exit_code", code)
	if err != nil {
		return cli.Exit(err.Error(), code)
	}
	return nil
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
	if path := c.String("config"); path != "" {
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

// applyFlags copies the flags and variables that were set over cfg.
// Numbers and durations are parsed here rather than by urfave/cli so that a
// bad value is reported in the same words wherever it came from.
func applyFlags(c *cli.Context, cfg *supervisor.Config) error {
	if c.IsSet("workers") {
		n, err := parseInt("workers", c.String("workers"))
		if err != nil {
			return err
		}
		cfg.Workers = n
	}
	if c.IsSet("listen") {
		cfg.Listen = c.String("listen")
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{
		{"ready-timeout", &cfg.ReadyTimeout},
		{"drain-timeout", &cfg.DrainTimeout},
		{"watchdog", &cfg.Watchdog},
	} {
		if !c.IsSet(f.name) {
			continue
		}
		d, err := time.ParseDuration(c.String(f.name))
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration such as 10s or 1m30s", f.name, c.String(f.name))
		}
		*f.dst = d
	}
	if c.IsSet("sockets") {
		cfg.Sockets = c.String("sockets")
	}
	if c.IsSet("metrics") {
		cfg.Metrics = c.String("metrics")
	}
	if c.IsSet("control") {
		cfg.Control = c.String("control")
	}
	if c.IsSet("log-format") {
		cfg.LogFormat = c.String("log-format")
	}
	if c.IsSet("max-accepts") {
		n, err := parseInt("max-accepts", c.String("max-accepts"))
		if err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("max-accepts: %d must not be negative (0 turns it off)", n)
		}
		cfg.MaxAccepts = uint64(n)
	}
	if c.IsSet("max-rss") {
		n, err := supervisor.ParseSize(c.String("max-rss"))
		if err != nil {
			return fmt.Errorf("max-rss: %w", err)
		}
		cfg.MaxRSS = n
	}
	if c.IsSet("user") {
		cfg.User = c.String("user")
	}
	if c.IsSet("group") {
		cfg.Group = c.String("group")
	}
	if c.IsSet("steer") {
		cfg.Steer = c.String("steer")
	}
	return nil
}

func parseInt(name, s string) (int, error) {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("%s: %q is not a whole number", name, s)
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

func newLogger(format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

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
