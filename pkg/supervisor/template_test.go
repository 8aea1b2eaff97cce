package supervisor

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExpand(t *testing.T) {
	values := map[string]string{"listen": "127.0.0.1:8080", "host": "127.0.0.1", "port": "8080",
		"slot": "2", "generation": "3", "workers": "4"}
	tests := []struct{ name, in, want string }{
		{"listen", "--bind={listen}", "--bind=127.0.0.1:8080"},
		{"two in one", "{host}:{port}", "127.0.0.1:8080"},
		{"slot and generation", "/run/app-{slot}-{generation}.pid", "/run/app-2-3.pid"},
		{"workers", "--workers={workers}", "--workers=4"},
		{"escaped", "{{listen}", "{listen}"},
		{"escaped unknown", "{{other}", "{other}"},
		{"brace then placeholder", "{ {listen}", "{ 127.0.0.1:8080"},
		{"go template", "{{.ID}}", "{{.ID}}"},
		{"js object", "listen({fd: 3})", "listen({fd: 3})"},
		{"json", `{"a":{"b":1}}`, `{"a":{"b":1}}`},
		{"empty braces", "{}", "{}"},
		{"unknown", "{unknown}", "{unknown}"}, // refused by checkTemplate, never expanded
		{"unclosed", "{listen", "{listen"},
		{"trailing brace", "tail{", "tail{"},
		{"no braces", "no braces", "no braces"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, values); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCheckTemplate(t *testing.T) {
	cfg := Config{Listen: Listeners{{Name: "http", Network: NetTCP, Addr: ":80"}, {Name: "admin", Network: NetTCP, Addr: ":81"},
		{Name: "dns", Network: NetUDP, Addr: ":53"}}}
	for _, ok := range []string{"{listen}", "{{lisen}", "{fd: 3}", `{"a":1}`, "{Listen}", "{}", "{slot}{port}", "{{.ID}}", "{fd:3}", "{listen:dns}", "{port:admin}", "{port:80}", "{host:-x}"} {
		t.Run(ok, func(t *testing.T) {
			if err := cfg.checkTemplate(ok); err != nil {
				t.Errorf("checkTemplate(%q) = %v, want nil", ok, err)
			}
		})
	}
	err := cfg.checkTemplate("--bind={lisen}")
	if err == nil || !strings.Contains(err.Error(), "unknown placeholder {lisen}") || !strings.Contains(err.Error(), "{{lisen}") {
		t.Errorf("checkTemplate({lisen}) = %v, want the unknown name and its escape", err)
	}
	err = cfg.checkTemplate("--bind={listen:admn}")
	if err == nil || !strings.Contains(err.Error(), "{listen:admn} names no listener (listeners: http, admin, dns)") {
		t.Errorf("checkTemplate({listen:admn}) = %v, want the listeners named", err)
	}
}

func TestListenerPlaceholders(t *testing.T) {
	cfg := Config{Workers: 2, Listen: Listeners{
		{Name: "http", Network: NetTCP, Addr: "127.0.0.1:8080"},
		{Name: "admin-api", Network: NetTCP, Addr: "[::1]:8081"},
		{Name: "dns", Network: NetUDP, Addr: ":5353"},
	}}
	values := childValues(cfg, 1, 3)
	for in, want := range map[string]string{
		"--bind={listen}":                     "--bind=127.0.0.1:8080",
		"{host}/{port}":                       "127.0.0.1/8080",
		"--admin={listen:admin-api}":          "--admin=[::1]:8081",
		"{host:admin-api} {port:admin-api}":   "::1 8081",
		"--dns-port={port:dns} h={host:dns}.": "--dns-port=5353 h=.",
		"{fd:3} {listen:nope}":                "{fd:3} {listen:nope}",
		"{{listen:dns}":                       "{listen:dns}",
		"{port:80} {host:8080}":               "{port:80} {host:8080}",
	} {
		if err := cfg.checkTemplate(in); err != nil && !strings.Contains(in, "nope") {
			t.Errorf("checkTemplate(%q) = %v", in, err)
		}
		if got := expand(in, values); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// A template that checks expands to something with no placeholder left,
// but for the escaped ones.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"{listen}", "{{", "{{{port}}}", "{fd:3}", "a{b}c", "{slot", "{{slot}", "{listen:dns}", "{port:}"} {
		f.Add(s)
	}
	cfg := Config{Listen: Listeners{{Name: "http", Network: NetTCP, Addr: "[::1]:80"}, {Name: "dns", Network: NetUDP, Addr: ":53"}},
		Workers: 2}
	values := childValues(cfg, 1, 7)
	f.Fuzz(func(t *testing.T, s string) {
		out := expand(s, values)
		if cfg.checkTemplate(s) != nil || strings.Contains(s, "{{") {
			return
		}
		for name := range values {
			if strings.Contains(out, "{"+name+"}") {
				t.Fatalf("expand(%q) = %q: left {%s}", s, out, name)
			}
		}
	})
}

func TestChildValuesIPv6(t *testing.T) {
	v := childValues(Config{Listen: tcpListen("[::1]:8080"), Workers: 3}, 0, 1)
	if v["host"] != "::1" || v["port"] != "8080" || v["listen"] != "[::1]:8080" || v["workers"] != "3" {
		t.Errorf("childValues = %v", v)
	}
}

func TestParseReadiness(t *testing.T) {
	tests := []struct {
		in   string
		want Readiness
		err  string
	}{
		{"notify", Readiness{Mode: ReadyNotify}, ""},
		{"listen", Readiness{Mode: ReadyListen}, ""},
		{"delay:1500ms", Readiness{Mode: ReadyDelay, Delay: 1500 * time.Millisecond}, ""},
		{"delay:0s", Readiness{}, "not a positive duration"},
		{"delay:", Readiness{}, "not a positive duration"},
		{"delay", Readiness{}, "is not notify, listen or delay:D"},
		{"LISTEN", Readiness{}, "is not notify, listen or delay:D"},
	}
	for _, tt := range tests {
		got, err := ParseReadiness(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseReadiness(%q) = %v, want error with %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseReadiness(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if back, _ := ParseReadiness(got.String()); back != got {
			t.Errorf("%v does not read back from %q", got, got.String())
		}
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want unix.Signal
		err  string
	}{
		{"TERM", unix.SIGTERM, ""},
		{"SIGQUIT", unix.SIGQUIT, ""},
		{"int", unix.SIGINT, ""},
		{"winch", unix.SIGWINCH, ""},
		{"15", unix.SIGTERM, ""},
		{"KILL", 0, "cannot be handled"},
		{"STOP", 0, "cannot be handled"},
		{"TERMINATE", 0, "not a signal name"},
		{"0", 0, "not a signal name"},
		{"", 0, "not a signal name"},
	}
	for _, tt := range tests {
		got, err := parseSignal(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseSignal(%q) = %v, %v; want error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestValidateTemplatesAndEnv(t *testing.T) {
	tests := []struct {
		edit func(*Config)
		err  string
	}{
		{func(c *Config) { c.Command = []string{"/bin/true", "--bind={lisen}"} }, `command: argument "--bind={lisen}": unknown placeholder {lisen}`},
		{func(c *Config) { c.Env = map[string]string{"LISTEN_FDS": "1"} }, "env: LISTEN_FDS is set by the master"},
		{func(c *Config) { c.Env = map[string]string{"PREFORK_SLOT": "1"} }, "env: PREFORK_SLOT is set by the master"},
		{func(c *Config) { c.Env = map[string]string{"A=B": "1"} }, `env: "A=B" is not a variable name`},
		{func(c *Config) { c.Env = map[string]string{"PORT": "{prot}"} }, "env: PORT: unknown placeholder {prot}"},
		{func(c *Config) { c.Ready = Readiness{Mode: ReadyDelay, Delay: time.Minute} }, "not shorter than the ready timeout"},
		{func(c *Config) { c.ChildOutput = "tee" }, `child-output: "tee" is not inherit or prefix`},
		{func(c *Config) { c.Env = map[string]string{"PORT": "{port}", "NGINX": "3;"} }, ""},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		cfg.Command = []string{"/bin/true"}
		tt.edit(&cfg)
		err := cfg.Validate()
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("Validate = %v, want nil", err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Validate = %v, want %q", err, tt.err)
		}
	}
}
