package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

// loadWith runs "master run ARGS" with an action that only loads the
// configuration, and returns it.
func loadWith(t *testing.T, args ...string) (supervisor.Config, error) {
	t.Helper()
	var cfg supervisor.Config
	var loadErr error
	cmd := runCommand()
	cmd.Action = func(c *cli.Context) error {
		cfg, loadErr = loadConfig(c)
		return nil
	}
	app := &cli.App{Name: "master", Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"master", "run"}, args...)); err != nil {
		t.Fatal(err)
	}
	return cfg, loadErr
}

// Flags beat the environment, which beats the config file, which beats the
// defaults.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "prefork.yaml")
	yaml := "workers: 3\nlisten: 127.0.0.1:7000\nready-timeout: 3s\ndrain-timeout: 3m\ncommand: [/bin/true]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		env         map[string]string
		args        []string
		wantWorkers int
		wantListen  string
		wantReady   time.Duration
		wantDrain   time.Duration
		wantCommand string
	}{
		{
			name:        "defaults",
			args:        []string{"--", "/bin/true"},
			wantWorkers: supervisor.DefaultConfig().Workers, wantListen: supervisor.DefaultListen,
			wantReady: supervisor.DefaultReadyTimeout, wantDrain: supervisor.DefaultDrainTimeout, wantCommand: "/bin/true",
		},
		{
			name:        "config over defaults",
			args:        []string{"--config", file},
			wantWorkers: 3, wantListen: "127.0.0.1:7000", wantReady: 3 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/true",
		},
		{
			name:        "env over config",
			env:         map[string]string{"PREFORK_WORKERS": "5", "PREFORK_READY_TIMEOUT": "5s", "PREFORK_CONFIG": file},
			wantWorkers: 5, wantListen: "127.0.0.1:7000", wantReady: 5 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/true",
		},
		{
			name:        "flags over env",
			env:         map[string]string{"PREFORK_WORKERS": "5", "PREFORK_LISTEN": "127.0.0.1:7001"},
			args:        []string{"--config", file, "--workers", "7", "--", "/bin/echo"},
			wantWorkers: 7, wantListen: "127.0.0.1:7001", wantReady: 3 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/echo",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := loadWith(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Workers != tt.wantWorkers || cfg.Listen != tt.wantListen || cfg.ReadyTimeout != tt.wantReady ||
				cfg.DrainTimeout != tt.wantDrain || cfg.Command[0] != tt.wantCommand {
				t.Errorf("config = %+v, want workers %d listen %s ready %v drain %v command %s", cfg,
					tt.wantWorkers, tt.wantListen, tt.wantReady, tt.wantDrain, tt.wantCommand)
			}
		})
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "4", want: 4},
		{in: "0", want: 0},
		{in: "abc", wantErr: true},
		{in: "4x", wantErr: true},
		{in: "", wantErr: true},
		{in: " 4", wantErr: true},
		{in: "+4", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseInt("workers", tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseInt(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// The flags of issue 5 reach the configuration, from flags and variables
// alike, and bad values are refused in the flag's own words.
func TestProductionFlags(t *testing.T) {
	t.Setenv("PREFORK_MAX_RSS", "256MiB")
	cfg, err := loadWith(t, "--watchdog", "2s", "--max-accepts", "500", "--user", "nobody", "--group", "nogroup", "--", "/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Watchdog != 2*time.Second || cfg.MaxAccepts != 500 || cfg.MaxRSS != 256<<20 || cfg.User != "nobody" || cfg.Group != "nogroup" {
		t.Errorf("config = %+v", cfg)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--watchdog", "soon"}, "watchdog: "},
		{[]string{"--watchdog", "-1s"}, "watchdog: "},
		{[]string{"--max-accepts", "-3"}, "max-accepts: "},
		{[]string{"--max-accepts", "lots"}, "max-accepts: "},
		{[]string{"--max-rss", "big"}, "max-rss: "},
	} {
		_, err := loadWith(t, append(tt.args, "--", "/bin/true")...)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want one starting %q", tt.args, err, tt.want)
		}
	}
}
