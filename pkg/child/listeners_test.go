package child

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseListeners(t *testing.T) {
	const pid = 4242
	ours := map[string]string{"LISTEN_PID": "4242"}
	with := func(base map[string]string, kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	bound := func(name, network, addr string) spec { return spec{name: name, network: network, addr: addr, fd: -1} }
	tests := []struct {
		name          string
		env           map[string]string
		want          []spec
		wantActivated bool
		wantInherited int
		wantErr       string // a substring of the error; "" for none
	}{
		// One unnamed listener, as before names.
		{name: "standalone", env: map[string]string{}, want: []spec{bound("default", "tcp", fallbackAddr)}},
		{name: "prefork listen", env: with(nil, "PREFORK_LISTEN", "0.0.0.0:80"), want: []spec{bound("default", "tcp", "0.0.0.0:80")}},
		{name: "prefork listen tcp scheme", env: with(nil, "PREFORK_LISTEN", "tcp://0.0.0.0:80"), want: []spec{bound("default", "tcp", "0.0.0.0:80")}},
		{name: "prefork listen udp", env: with(nil, "PREFORK_LISTEN", "udp://127.0.0.1:53"), want: []spec{bound("default", "udp", "127.0.0.1:53")}},
		{name: "prefork listen bad scheme", env: with(nil, "PREFORK_LISTEN", "sctp://x:1"), wantErr: `listener "default": PREFORK_LISTEN: address "sctp://x:1": unknown scheme`},
		{name: "prefork listen udp without address", env: with(nil, "PREFORK_LISTEN", "udp://"), wantErr: "no host:port"},
		{
			name: "activated for us, one socket", env: with(ours, "LISTEN_FDS", "1", "PREFORK_LISTEN", "0.0.0.0:80"),
			want: []spec{{name: "default", fd: 3}}, wantActivated: true, wantInherited: 1,
		},
		{
			name: "old master's fd name", env: with(ours, "LISTEN_FDS", "1", "LISTEN_FDNAMES", "prefork"),
			want: []spec{{name: "prefork", fd: 3}}, wantActivated: true, wantInherited: 1,
		},
		{
			name: "activated for another pid", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1", "PREFORK_LISTEN": "0.0.0.0:80"},
			want: []spec{bound("default", "tcp", "0.0.0.0:80")},
		},
		{name: "no LISTEN_PID", env: with(nil, "LISTEN_FDS", "1"), want: []spec{bound("default", "tcp", fallbackAddr)}},
		{name: "zero fds", env: with(ours, "LISTEN_FDS", "0"), want: []spec{bound("default", "tcp", fallbackAddr)}, wantActivated: true},
		{name: "malformed fds", env: with(ours, "LISTEN_FDS", "x"), wantErr: "parse LISTEN_FDS", wantActivated: true},
		{name: "negative fds", env: with(ours, "LISTEN_FDS", "-1"), wantErr: "want 0 to 64", wantActivated: true},
		{name: "too many fds", env: with(ours, "LISTEN_FDS", "65"), wantErr: "want 0 to 64", wantActivated: true},
		{name: "malformed pid", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "me"}, wantErr: "parse LISTEN_PID"},
		{name: "fds for another pid not checked", env: map[string]string{"LISTEN_FDS": "x", "LISTEN_PID": "1"}, want: []spec{bound("default", "tcp", fallbackAddr)}},

		// Named listeners the child binds.
		{
			name: "child mode, three listeners",
			env: with(nil, "PREFORK_LISTENERS", "http,admin-api,dns", "PREFORK_LISTEN", "127.0.0.1:8080",
				"PREFORK_LISTEN_HTTP", "127.0.0.1:8080", "PREFORK_LISTEN_ADMIN_API", "tcp://127.0.0.1:8081",
				"PREFORK_LISTEN_DNS", "udp://127.0.0.1:5353"),
			want: []spec{bound("http", "tcp", "127.0.0.1:8080"), bound("admin-api", "tcp", "127.0.0.1:8081"), bound("dns", "udp", "127.0.0.1:5353")},
		},
		{
			name: "child mode, a name without its address",
			env:  with(nil, "PREFORK_LISTENERS", "http,dns", "PREFORK_LISTEN_HTTP", "127.0.0.1:8080"), wantErr: `listener "dns": PREFORK_LISTEN_DNS is unset`,
		},
		{
			name:    "child mode, bad scheme",
			env:     with(nil, "PREFORK_LISTENERS", "dns", "PREFORK_LISTEN_DNS", "quic://127.0.0.1:1"),
			wantErr: `listener "dns": PREFORK_LISTEN_DNS: address "quic://127.0.0.1:1": unknown scheme "quic"`,
		},
		{name: "bad name", env: with(nil, "PREFORK_LISTENERS", "http,Admin"), wantErr: `bad listener name "Admin"`},
		{name: "empty name", env: with(nil, "PREFORK_LISTENERS", "http,,dns"), wantErr: `bad listener name ""`},
		{name: "name too long", env: with(nil, "PREFORK_LISTENERS", "a"+strings.Repeat("b", 32)), wantErr: "bad listener name"},
		{name: "repeated name", env: with(nil, "PREFORK_LISTENERS", "http,http"), wantErr: `listeners "http" and "http" both read PREFORK_LISTEN_HTTP`},
		{name: "names sharing a variable", env: with(nil, "PREFORK_LISTENERS", "a-b,a_b"), wantErr: "both read PREFORK_LISTEN_A_B"},
		{name: "too many names", env: with(nil, "PREFORK_LISTENERS", names(65)), wantErr: "65 listeners, at most 64"},

		// Named listeners the master passes.
		{
			name: "master mode, three listeners",
			env: with(ours, "LISTEN_FDS", "3", "LISTEN_FDNAMES", "http:admin:dns", "PREFORK_LISTENERS", "http,admin,dns",
				"PREFORK_LISTEN_HTTP", "127.0.0.1:8080", "PREFORK_LISTEN_DNS", "udp://127.0.0.1:5353"),
			want:          []spec{{name: "http", network: "tcp", fd: 3}, {name: "admin", fd: 4}, {name: "dns", network: "udp", fd: 5}},
			wantActivated: true, wantInherited: 3,
		},
		{
			name:          "master mode, fds named in another order",
			env:           with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "dns:http", "PREFORK_LISTENERS", "http,dns"),
			want:          []spec{{name: "http", fd: 4}, {name: "dns", fd: 3}},
			wantActivated: true, wantInherited: 2,
		},
		{
			name:          "master mode, fds by position without LISTEN_FDNAMES",
			env:           with(ours, "LISTEN_FDS", "2", "PREFORK_LISTENERS", "http,dns"),
			want:          []spec{{name: "http", fd: 3}, {name: "dns", fd: 4}},
			wantActivated: true, wantInherited: 2,
		},
		{
			name:    "more fd names than fds",
			env:     with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "http:admin:dns", "PREFORK_LISTENERS", "http,admin,dns"),
			wantErr: `LISTEN_FDS=2 but LISTEN_FDNAMES="http:admin:dns" names 3 sockets`, wantActivated: true, wantInherited: 2,
		},
		{
			name:    "more listeners than fds",
			env:     with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "http:admin", "PREFORK_LISTENERS", "http,admin,dns"),
			wantErr: "LISTEN_FDS=2 but PREFORK_LISTENERS names 3 listeners (http,admin,dns)", wantActivated: true, wantInherited: 2,
		},
		{
			name:    "a listener without its fd",
			env:     with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "http:admin", "PREFORK_LISTENERS", "http,dns"),
			wantErr: `listener "dns": no inherited socket of that name in LISTEN_FDNAMES=http:admin`, wantActivated: true, wantInherited: 2,
		},
		{
			name:    "repeated fd name",
			env:     with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "http:http"),
			wantErr: `empty or repeated name "http"`, wantActivated: true, wantInherited: 2,
		},
		{
			name:          "systemd's names without PREFORK_LISTENERS",
			env:           with(ours, "LISTEN_FDS", "2", "LISTEN_FDNAMES", "web.socket:metrics"),
			want:          []spec{{name: "web.socket", fd: 3}, {name: "metrics", fd: 4}},
			wantActivated: true, wantInherited: 2,
		},
		{
			name:    "two unnamed fds",
			env:     with(ours, "LISTEN_FDS", "2"),
			wantErr: "LISTEN_FDS=2 without LISTEN_FDNAMES", wantActivated: true, wantInherited: 2,
		},
		{
			name:    "master mode with a bad listener name",
			env:     with(ours, "LISTEN_FDS", "1", "PREFORK_LISTENERS", "HTTP"),
			wantErr: "bad listener name", wantActivated: true, wantInherited: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseListeners(mapEnv(tt.env), pid)
			if got.activated != tt.wantActivated || got.inherited != tt.wantInherited {
				t.Errorf("activated %v, inherited %d; want %v, %d", got.activated, got.inherited, tt.wantActivated, tt.wantInherited)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.specs, tt.want) {
				t.Errorf("specs = %+v\nwant %+v", got.specs, tt.want)
			}
		})
	}
}

// names returns n distinct listener names, comma-separated.
func names(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("l%d", i)
	}
	return strings.Join(s, ",")
}

func TestListenVar(t *testing.T) {
	for name, want := range map[string]string{
		"http": "PREFORK_LISTEN_HTTP", "admin-api": "PREFORK_LISTEN_ADMIN_API", "a_1": "PREFORK_LISTEN_A_1",
	} {
		if got := listenVar(name); got != want {
			t.Errorf("listenVar(%q) = %q, want %q", name, got, want)
		}
	}
}

// FuzzParseListeners checks the table's invariants on any environment:
// at least one listener, unique names, descriptors 3.. each used once,
// known networks and addresses without a scheme.
func FuzzParseListeners(f *testing.F) {
	f.Add("http,admin,dns", "3", "http:admin:dns", "127.0.0.1:8080", "udp://127.0.0.1:53", true)
	f.Add("", "1", "prefork", "udp://[::1]:53", "", true)
	f.Add("a-b,c", "", "", "tcp://x:1", "udp://", false)
	f.Add("", "2", "x:x", "", "", true)
	f.Fuzz(func(t *testing.T, order, fds, fdNames, first, second string, ours bool) {
		pid := "1"
		if ours {
			pid = "4242"
		}
		env := map[string]string{
			"PREFORK_LISTENERS": order, "LISTEN_FDS": fds, "LISTEN_FDNAMES": fdNames, "LISTEN_PID": pid,
			"PREFORK_LISTEN": first,
		}
		// The first two names get addresses, so child mode can succeed.
		for i, name := range strings.Split(order, ",") {
			if i < 2 {
				env[listenVar(name)] = []string{first, second}[i]
			}
		}
		tab, err := parseListeners(mapEnv(env), 4242)
		if tab.inherited < 0 || tab.inherited > 64 || (tab.inherited > 0 && !tab.activated) {
			t.Fatalf("activated %v, inherited %d", tab.activated, tab.inherited)
		}
		if err != nil {
			return
		}
		if len(tab.specs) == 0 {
			t.Fatal("no listener and no error")
		}
		seen, fdSeen := map[string]bool{}, map[int]bool{}
		for _, sp := range tab.specs {
			if sp.name == "" || seen[sp.name] {
				t.Fatalf("empty or repeated name in %+v", tab.specs)
			}
			seen[sp.name] = true
			switch {
			case sp.fd >= 0:
				if sp.fd < listenFD || sp.fd >= listenFD+tab.inherited || fdSeen[sp.fd] || sp.addr != "" {
					t.Fatalf("bad inherited spec %+v (inherited %d)", sp, tab.inherited)
				}
				fdSeen[sp.fd] = true
			case sp.fd != -1 || sp.addr == "" || sp.network == "":
				t.Fatalf("bad bound spec %+v", sp)
			}
			if sp.network != "" && sp.network != netTCP && sp.network != netUDP {
				t.Fatalf("network %q", sp.network)
			}
		}
		if tab.inherited > 0 && len(tab.specs) != tab.inherited {
			t.Fatalf("%d specs for %d inherited sockets", len(tab.specs), tab.inherited)
		}
	})
}
