package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
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
			wantWorkers: supervisor.DefaultConfig().Workers, wantListen: "default=" + supervisor.DefaultListen,
			wantReady: supervisor.DefaultReadyTimeout, wantDrain: supervisor.DefaultDrainTimeout, wantCommand: "/bin/true",
		},
		{
			name:        "config over defaults",
			args:        []string{"--config", file},
			wantWorkers: 3, wantListen: "default=127.0.0.1:7000", wantReady: 3 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/true",
		},
		{
			name:        "env over config",
			env:         map[string]string{"PREFORK_WORKERS": "5", "PREFORK_READY_TIMEOUT": "5s", "PREFORK_CONFIG": file},
			wantWorkers: 5, wantListen: "default=127.0.0.1:7000", wantReady: 5 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/true",
		},
		{
			name:        "flags over env",
			env:         map[string]string{"PREFORK_WORKERS": "5", "PREFORK_LISTEN": "127.0.0.1:7001"},
			args:        []string{"--config", file, "--workers", "7", "--", "/bin/echo"},
			wantWorkers: 7, wantListen: "default=127.0.0.1:7001", wantReady: 3 * time.Second, wantDrain: 3 * time.Minute,
			wantCommand: "/bin/echo",
		},
		{
			name:        "repeated listen flags, in order",
			args:        []string{"--listen", "http=127.0.0.1:7002", "--listen", "dns=udp://127.0.0.1:7003", "--", "/bin/true"},
			wantWorkers: supervisor.DefaultConfig().Workers, wantListen: "http=127.0.0.1:7002,dns=udp://127.0.0.1:7003",
			wantReady: supervisor.DefaultReadyTimeout, wantDrain: supervisor.DefaultDrainTimeout, wantCommand: "/bin/true",
		},
		{
			name:        "listen variable as a list",
			env:         map[string]string{"PREFORK_LISTEN": "web=127.0.0.1:7004,admin=tcp://127.0.0.1:7005"},
			args:        []string{"--", "/bin/true"},
			wantWorkers: supervisor.DefaultConfig().Workers, wantListen: "web=127.0.0.1:7004,admin=127.0.0.1:7005",
			wantReady: supervisor.DefaultReadyTimeout, wantDrain: supervisor.DefaultDrainTimeout, wantCommand: "/bin/true",
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
			if cfg.Workers != tt.wantWorkers || cfg.Listen.String() != tt.wantListen || cfg.ReadyTimeout != tt.wantReady ||
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

// `master run --help` lists every flag of the settings table with its
// metavar, variable and default.
func TestRunHelpListsSettings(t *testing.T) {
	var out bytes.Buffer
	app := &cli.App{Name: "master", Commands: []*cli.Command{runCommand()}, Writer: &out, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run([]string{"master", "run", "--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, s := range supervisor.Settings() {
		if !s.Flag() {
			if strings.Contains(help, "--"+s.Name) {
				t.Errorf("help lists --%s, which is no flag", s.Name)
			}
			continue
		}
		i := strings.Index(help, "--"+s.Name+" "+s.Metavar+" ")
		if i < 0 {
			t.Errorf("help has no line for --%s %s:\n%s", s.Name, s.Metavar, help)
			continue
		}
		line, _, _ := strings.Cut(help[i:], "\n")
		want := []string{s.Usage, "[$" + s.Env + "]"}
		if s.Default != "" {
			want = append(want, "(default: "+s.Default+")")
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("help line %q lacks %q", line, w)
			}
		}
	}
}

// Every flag and every variable reaches its setting, and only that one.
func TestEveryFlagApplies(t *testing.T) {
	base, _ := loadWith(t, "--", "/bin/true")
	for _, s := range supervisor.Settings() {
		if !s.Flag() || s.Name == supervisor.ConfigSetting {
			continue
		}
		value := map[string]string{"N": "3", "D": "2s", "SIZE": "1MiB", "SIG": "QUIT"}[s.Metavar]
		switch s.Name {
		case "ready":
			value = "listen"
		case "reload-strategy":
			value = "rolling"
		}
		if value == "" {
			value = "x"
		}
		want := base
		if err := s.Set(&want, value); err != nil {
			t.Fatal(err)
		}
		t.Run(s.Name+" flag", func(t *testing.T) {
			got, _ := loadWith(t, "--"+s.Name, value, "--", "/bin/true") // the error is Validate's
			if !reflect.DeepEqual(got, want) {
				t.Errorf("--%s %s: config %+v, want %+v", s.Name, value, got, want)
			}
		})
		t.Run(s.Name+" variable", func(t *testing.T) {
			t.Setenv(s.Env, value)
			got, _ := loadWith(t, "--", "/bin/true")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%s: config %+v, want %+v", s.Env, value, got, want)
			}
		})
	}
}

// A bad value is reported in the same words from a flag, a variable and
// the config file, which adds where it is.
func TestBadValueSameWordsEverywhere(t *testing.T) {
	file := filepath.Join(t.TempDir(), "prefork.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:7000\nworkers: abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const want = `workers: "abc" is not a whole number`
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "flag", args: []string{"--workers", "abc"}, want: want},
		{name: "variable", env: map[string]string{"PREFORK_WORKERS": "abc"}, want: want},
		{name: "config file", args: []string{"--config", file}, want: "config " + file + ": line 2: " + want},
		// A flag wins over the file, which is still read, and still
		// refused.
		{name: "file under a good flag", args: []string{"--config", file, "--workers", "2"}, want: "config " + file + ": line 2: " + want},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := loadWith(t, append(tt.args, "--", "/bin/true")...)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// An unknown key in the config file is named, with its line and the key
// it was probably meant to be.
func TestUnknownConfigKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "prefork.yaml")
	if err := os.WriteFile(file, []byte("# prefork\nlisten: 127.0.0.1:7000\nwokers: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadWith(t, "--config", file)
	want := "config " + file + `: unknown key "wokers" at line 3; did you mean "workers"?`
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}
