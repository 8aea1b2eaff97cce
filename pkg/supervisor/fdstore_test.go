package supervisor

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestFDName(t *testing.T) {
	for _, tt := range []struct {
		addr string
		slot int
		name string
	}{
		{addr: "127.0.0.1:8080", slot: 0, name: "prefork.0.127.0.0.1%3A8080"},
		{addr: ":8080", slot: 12, name: "prefork.12.%3A8080"},
		{addr: "[::1]:80", slot: 3, name: "prefork.3.[%3A%3A1]%3A80"},
		{addr: "[fe80::1%eth0]:80", slot: 1, name: "prefork.1.[fe80%3A%3A1%25eth0]%3A80"},
		{addr: "localhost:http", slot: 4095, name: "prefork.4095.localhost%3Ahttp"},
		{addr: "a b\x00\x7f\xff", slot: 0, name: "prefork.0.a%20b%00%7F%FF"},
		{addr: "host.with.dots:1", slot: 7, name: "prefork.7.host.with.dots%3A1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name, err := fdName(tt.addr, tt.slot)
			if err != nil || name != tt.name {
				t.Fatalf("fdName(%q, %d) = %q, %v; want %q", tt.addr, tt.slot, name, err, tt.name)
			}
			if !fdNameValid(name) {
				t.Errorf("%q is not a name systemd accepts", name)
			}
			addr, slot, err := parseFDName(name)
			if err != nil || addr != tt.addr || slot != tt.slot {
				t.Errorf("parseFDName(%q) = %q, %d, %v; want %q, %d", name, addr, slot, err, tt.addr, tt.slot)
			}
		})
	}
}

func TestFDNameRefused(t *testing.T) {
	for _, tt := range []struct {
		why  string
		addr string
		slot int
	}{
		{why: "negative slot", addr: ":80", slot: -1},
		{why: "no address", addr: "", slot: 0},
		{why: "too long", addr: strings.Repeat("a", 250) + ":80", slot: 0},
		{why: "too long once escaped", addr: strings.Repeat(":", 82), slot: 0},
	} {
		if name, err := fdName(tt.addr, tt.slot); err == nil {
			t.Errorf("%s: fdName(%q, %d) = %q, want an error", tt.why, tt.addr, tt.slot, name)
		}
	}
}

func TestParseFDNameRefused(t *testing.T) {
	for _, name := range []string{
		"",
		"unknown",
		"prefork",
		"prefork.",
		"prefork.0",
		"prefork.0.",
		"prefork.x.:80",
		"prefork.-1.%3A80",
		"prefork.+1.%3A80",
		"prefork.01.%3A80",   // leading zero
		"prefork.0.a:80",     // ':' is never in a name
		"prefork.0.a b",      // space is escaped
		"prefork.0.a%3a80",   // lower-case escape
		"prefork.0.a%41",     // 'A' needs no escape
		"prefork.0.a%3",      // cut short
		"prefork.0.a%",       // cut short
		"prefork.0.a%G0",     // not hex
		"prefork.0.a%+F",     // not hex
		"Prefork.0.a%3A80",   // prefix is exact
		"xprefork.0.a%3A80",  // prefix is exact
		"prefork.0.\x7faddr", // not escaped
		"prefork.0." + strings.Repeat("a", 250),
	} {
		if addr, slot, err := parseFDName(name); err == nil || !errors.Is(err, errFDName) {
			t.Errorf("parseFDName(%q) = %q, %d, %v; want errFDName", name, addr, slot, err)
		}
	}
}

// FuzzFDName: a name parses only if fdName makes exactly it from what it
// parses to, and every address and slot fdName names comes back.
func FuzzFDName(f *testing.F) {
	for _, seed := range []string{"prefork.0.127.0.0.1%3A8080", "prefork.3.[%3A%3A1]%3A80", "prefork.01.x",
		"prefork.0.%25", "prefork.0.%3a", "", ":8080", "[fe80::1%eth0]:80"} {
		f.Add(seed, 0)
	}
	f.Fuzz(func(t *testing.T, s string, slot int) {
		if addr, n, err := parseFDName(s); err == nil {
			again, err := fdName(addr, n)
			if err != nil || again != s {
				t.Fatalf("parseFDName(%q) = %q, %d, named back %q, %v", s, addr, n, again, err)
			}
			if !fdNameValid(s) {
				t.Fatalf("parseFDName accepted %q, which systemd does not", s)
			}
		}
		name, err := fdName(s, slot)
		if err != nil {
			return
		}
		if !fdNameValid(name) {
			t.Fatalf("fdName(%q, %d) = %q, which systemd does not accept", s, slot, name)
		}
		addr, n, err := parseFDName(name)
		if err != nil || addr != s || n != slot {
			t.Fatalf("fdName(%q, %d) = %q, parsed back as %q, %d, %v", s, slot, name, addr, n, err)
		}
	})
}

func TestParseListenEnv(t *testing.T) {
	const pid = 4242
	for _, tt := range []struct {
		name                string
		listenPID, fds, fdn string
		want                []listenFD
		why                 bool
		err                 bool
	}{
		{name: "nothing"},
		{name: "another process's", listenPID: "17", fds: "2", fdn: "a:b"},
		{name: "no count", listenPID: "4242"},
		{name: "zero", listenPID: "4242", fds: "0", fdn: ""},
		{name: "named", listenPID: "4242", fds: "2", fdn: "prefork.0.x%3A1:other",
			want: []listenFD{{3, "prefork.0.x%3A1"}, {4, "other"}}},
		{name: "names unset", listenPID: "4242", fds: "2",
			want: []listenFD{{3, "unknown"}, {4, "unknown"}}, why: true},
		{name: "names miscounted", listenPID: "4242", fds: "2", fdn: "a:b:c",
			want: []listenFD{{3, "unknown"}, {4, "unknown"}}, why: true},
		{name: "empty name kept", listenPID: "4242", fds: "2", fdn: "a:",
			want: []listenFD{{3, "a"}, {4, ""}}},
		{name: "bad pid", listenPID: "x", fds: "1", err: true},
		{name: "negative pid", listenPID: "-4242", fds: "1", err: true},
		{name: "bad count", listenPID: "4242", fds: "x", err: true},
		{name: "negative count", listenPID: "4242", fds: "-1", err: true},
		{name: "huge count", listenPID: "4242", fds: "100000000", err: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, why, err := parseListenEnv(pid, tt.listenPID, tt.fds, tt.fdn)
			if (err != nil) != tt.err {
				t.Fatalf("error %v, want one: %v", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if (why != "") != tt.why {
				t.Errorf("why %q, want one: %v", why, tt.why)
			}
		})
	}
}
