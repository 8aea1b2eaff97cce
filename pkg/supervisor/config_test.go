package supervisor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Command = []string{"/bin/sh"}
	return c
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "defaults", mutate: func(*Config) {}},
		{name: "zero workers", mutate: func(c *Config) { c.Workers = 0 }, wantErr: "workers"},
		{name: "too many workers", mutate: func(c *Config) { c.Workers = MaxWorkers + 1 }, wantErr: "workers"},
		{name: "no port", mutate: func(c *Config) { c.Listen = tcpListen("127.0.0.1") }, wantErr: "listen"},
		{name: "port zero", mutate: func(c *Config) { c.Listen = tcpListen("127.0.0.1:0") }, wantErr: "listen"},
		{name: "port too big", mutate: func(c *Config) { c.Listen = tcpListen("127.0.0.1:70000") }, wantErr: "listen"},
		{name: "named port", mutate: func(c *Config) { c.Listen = tcpListen("127.0.0.1:http") }, wantErr: "listen"},
		{name: "bad host", mutate: func(c *Config) { c.Listen = tcpListen("999.1.1.1:80") }, wantErr: "listen"},
		{name: "all interfaces", mutate: func(c *Config) { c.Listen = tcpListen(":8080") }},
		{name: "ipv6", mutate: func(c *Config) { c.Listen = tcpListen("[::1]:8080") }},
		{name: "zero ready timeout", mutate: func(c *Config) { c.ReadyTimeout = 0 }, wantErr: "ready-timeout"},
		{name: "negative drain timeout", mutate: func(c *Config) { c.DrainTimeout = -time.Second }, wantErr: "drain-timeout"},
		{name: "unknown sockets", mutate: func(c *Config) { c.Sockets = "both" }, wantErr: "sockets"},
		{name: "unknown log format", mutate: func(c *Config) { c.LogFormat = "xml" }, wantErr: "log-format"},
		{name: "watchdog on", mutate: func(c *Config) { c.Watchdog = time.Second }},
		{name: "negative watchdog", mutate: func(c *Config) { c.Watchdog = -time.Second }, wantErr: "watchdog"},
		{name: "tiny watchdog", mutate: func(c *Config) { c.Watchdog = time.Millisecond }, wantErr: "watchdog"},
		{name: "steer off", mutate: func(c *Config) { c.Steer = SteerOff }},
		{name: "steer on in master mode", mutate: func(c *Config) { c.Steer, c.Sockets = SteerOn, SocketsMaster }},
		{name: "unknown steer", mutate: func(c *Config) { c.Steer = "maybe" }, wantErr: "steer"},
		{name: "no command", mutate: func(c *Config) { c.Command = nil }, wantErr: "command"},
		{name: "missing command", mutate: func(c *Config) { c.Command = []string{filepath.Join(dir, "absent")} }, wantErr: "command"},
		{name: "not executable", mutate: func(c *Config) { c.Command = []string{notExec} }, wantErr: "command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+":") {
				t.Fatalf("Validate() = %v, want an error starting %q", err, tt.wantErr+":")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans more than one line", err)
			}
		})
	}
}

func TestParseConfigFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    func(*Config)
		wantErr string
	}{
		{name: "empty file refused", in: "", wantErr: "the file sets nothing"},
		{name: "blank file refused", in: " \n\t\n", wantErr: "truncated mid-deploy is the usual cause"},
		{name: "comment only refused", in: "# nothing\n", wantErr: "the file sets nothing"},
		{name: "document marker only refused", in: "---\n# nothing\n", wantErr: "the file sets nothing"},
		{name: "empty mapping says defaults", in: "{}\n", want: func(*Config) {}},
		{
			name: "every key",
			in: "workers: 3\nlisten: 127.0.0.1:9000\nready-timeout: 2s\ndrain-timeout: 1m\n" +
				"sockets: child\nlog-format: json\ncommand: [/bin/echo, hi]\n" +
				"watchdog: 5s\nmax-accepts: 1000\nmax-rss: 512MiB\nuser: nobody\ngroup: nogroup\nsteer: off\n" +
				"ready: delay:1s\nstop-signal: QUIT\nchild-output: prefix\nenv: {NGINX: \"3;\", PORT: \"{port}\"}\n",
			want: func(c *Config) {
				c.Ready = Readiness{Mode: ReadyDelay, Delay: time.Second}
				c.StopSignal = unix.SIGQUIT
				c.ChildOutput = OutputPrefix
				c.Env = map[string]string{"NGINX": "3;", "PORT": "{port}"}
				c.Watchdog = 5 * time.Second
				c.MaxAccepts = 1000
				c.MaxRSS = 512 << 20
				c.User, c.Group = "nobody", "nogroup"
				c.Steer = SteerOff
				c.Workers = 3
				c.Listen = tcpListen("127.0.0.1:9000")
				c.ReadyTimeout = 2 * time.Second
				c.DrainTimeout = time.Minute
				c.LogFormat = "json"
				c.Command = []string{"/bin/echo", "hi"}
			},
		},
		{name: "unknown key", in: "workers: 2\nwrokers: 3\n", wantErr: `unknown key "wrokers" at line 2; did you mean "workers"?`},
		{name: "unknown key far from any", in: "colour: blue\n", wantErr: `unknown key "colour" at line 1`},
		{name: "flag that is no key", in: "config: /etc/x.yaml\n", wantErr: `unknown key "config" at line 1: --config is a flag`},
		{name: "key set twice", in: "workers: 2\nlisten: :80\nworkers: 3\n", wantErr: `line 3: key "workers" is set twice (first at line 1)`},
		{name: "wrong type", in: "workers: many\n", wantErr: `line 1: workers: "many" is not a whole number`},
		{name: "bad duration", in: "\ndrain-timeout: soon\n", wantErr: `line 2: drain-timeout: "soon" is not a duration such as 10s or 1m30s`},
		{name: "not a mapping", in: "- a\n- b\n", wantErr: "line 1: the file must map keys to values (workers: 4), not be a list"},
		{name: "a bare word", in: "workers\n", wantErr: `not be the single value "workers"`},
		{name: "list for a single value", in: "workers: [1, 2]\n", wantErr: "line 1: workers: must be a single value, not a list"},
		{name: "mapping for a single value", in: "listen:\n  host: x\n", wantErr: "line 2: listen: must be a single value, not a mapping"},
		{name: "string for a list", in: "command: /bin/echo hi\n", wantErr: `line 1: command: must be a list such as [prog, arg], not the single value "/bin/echo hi"`},
		{name: "list in a list", in: "command:\n  - /bin/echo\n  - [a]\n", wantErr: "command: item at line 3 must be a single value, not a list"},
		{name: "key that is a list", in: "[a]: 1\n", wantErr: "line 1: a key must be a name such as workers, not a list"},
		{name: "syntax error", in: "workers: [\n", wantErr: "yaml: line"},
		{name: "plain byte count", in: "max-rss: 1048576\n", want: func(c *Config) { c.MaxRSS = 1 << 20 }},
		{name: "bad size", in: "max-rss: lots\n", wantErr: `max-rss: "lots" is not a size`},
		{name: "negative max-accepts", in: "max-accepts: -5\n", wantErr: "max-accepts: -5 must not be negative (0 turns it off)"},
		{name: "quoted number", in: "workers: \"6\"\n", want: func(c *Config) { c.Workers = 6 }},
		{name: "off is a string, not false", in: "steer: off\n", want: func(c *Config) { c.Steer = SteerOff }},
		{name: "empty string turns metrics off", in: "metrics: \"\"\n", want: func(c *Config) { c.Metrics = "" }},
		{name: "no value leaves a setting alone", in: "workers:\nmetrics: ~\ncommand:\n", want: func(*Config) {}},
		{name: "only null refused", in: "~\n", wantErr: "the file sets nothing"},
		{name: "empty command", in: "command: []\n", want: func(c *Config) { c.Command = []string{} }},
		{name: "anchored unknown key", in: "x-timeout: &t 4s\n", wantErr: `unknown key "x-timeout" at line 1`},
		{
			name: "anchor and alias", in: "ready-timeout: &t 4s\ndrain-timeout: *t\n",
			want: func(c *Config) { c.ReadyTimeout, c.DrainTimeout = 4*time.Second, 4*time.Second },
		},
		{name: "block list", in: "command:\n  - /bin/echo\n  - hi\n", want: func(c *Config) { c.Command = []string{"/bin/echo", "hi"} }},
		{name: "env block", in: "env:\n  A: x\n  B:\n", want: func(c *Config) { c.Env = map[string]string{"A": "x", "B": ""} }},
		{name: "env as a list", in: "env: [A=x]\n", wantErr: "line 1: env: must map names to values (NAME: value), not a list"},
		{name: "env value a list", in: "env:\n  A: [x]\n", wantErr: "env: A at line 2 must be a single value, not a list"},
		{name: "env name twice", in: "env: {A: x, A: y}\n", wantErr: "A"},
		{name: "bad stop signal", in: "stop-signal: KILL\n", wantErr: "line 1: stop-signal: SIGKILL cannot be handled"},
		{name: "bad ready", in: "ready: soon\n", wantErr: `line 1: ready: "soon" is not notify, listen or delay:D`},
		{name: "two documents", in: "workers: 1\n---\nworkers: 2\n", wantErr: "more than one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := validConfig()
			err := ParseConfigFile([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseConfigFile = %v, want an error with %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q spans more than one line", err)
				}
				if !reflect.DeepEqual(got, validConfig()) {
					t.Errorf("a rejected file changed the config to %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := validConfig()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseConfigFile = %+v, want %+v", got, want)
			}
		})
	}
}

func TestLoadConfigFileUnreadable(t *testing.T) {
	c := validConfig()
	err := LoadConfigFile(filepath.Join(t.TempDir(), "absent.yaml"), &c)
	if err == nil || !strings.HasPrefix(err.Error(), "config:") {
		t.Fatalf("LoadConfigFile(absent) = %v, want a config: error", err)
	}
}

func TestChildEnv(t *testing.T) {
	base := []string{"PATH=/bin", "PREFORK_WORKERS=9", "NOTIFY_SOCKET=/run/systemd/notify",
		"LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=x", "HOME=/root", "USER=root",
		"WATCHDOG_USEC=30000000", "WATCHDOG_PID=1"}
	got := childEnv(base, map[string]string{"PREFORK_WORKERS": "2", "NOTIFY_SOCKET": "@x", "USER": "nobody"})
	want := map[string]bool{"PATH=/bin": true, "HOME=/root": true, "PREFORK_WORKERS=2": true, "NOTIFY_SOCKET=@x": true,
		"USER=nobody": true}
	if len(got) != len(want) {
		t.Fatalf("childEnv = %q, want exactly %v", got, want)
	}
	for _, kv := range got {
		if !want[kv] {
			t.Errorf("childEnv has %q", kv)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "536870912", want: 536870912},
		{in: "512MiB", want: 512 << 20},
		{in: "512M", want: 512 << 20},
		{in: "512 MiB", want: 512 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "2G", want: 2 << 30},
		{in: "500MB", want: 500e6},
		{in: "64KiB", want: 64 << 10},
		{in: "1TiB", want: 1 << 40},
		{in: "100B", want: 100},
		{in: "", bad: true},
		{in: "MiB", bad: true},
		{in: "-1", bad: true},
		{in: "1e9", bad: true},
		{in: "inf", bad: true},
		{in: "12 parsecs", bad: true},
		{in: "0x10", bad: true},
		{in: "99999999999TiB", bad: true},
		{in: ".", bad: true},
	} {
		got, err := ParseSize(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
