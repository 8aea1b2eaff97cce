package supervisor

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// tcpListen is one unnamed TCP --listen, as a config holds it.
func tcpListen(addr string) Listeners {
	return Listeners{{Name: DefaultListenerName, Network: NetTCP, Addr: addr}}
}

func TestParseListeners(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      []string
		want    string // Listeners.String()
		wantErr string
	}{
		{in: []string{"127.0.0.1:8080"}, want: "default=127.0.0.1:8080"},
		{in: []string{"tcp://[::1]:80"}, want: "default=[::1]:80"},
		{in: []string{"udp://127.0.0.1:5353"}, want: "default=udp://127.0.0.1:5353"},
		{in: []string{"http=:80", "admin=127.0.0.1:81", "dns=udp://[::1]:53"}, want: "http=:80,admin=127.0.0.1:81,dns=udp://[::1]:53"},
		{in: []string{"web-1=:80"}, want: "web-1=:80"},
		{in: []string{":80", "admin=:81"}, wantErr: `":80" has no name`},
		{in: []string{"HTTP=:80"}, wantErr: `name "HTTP"`},
		{in: []string{"1x=:80"}, wantErr: `name "1x"`},
		{in: []string{"=:80"}, wantErr: `name ""`},
		{in: []string{"dns=sctp://:53"}, wantErr: "sctp:// is not tcp:// or udp://"},
		{in: nil, wantErr: "no address given"},
	}
	for _, tt := range tests {
		got, err := parseListeners(tt.in)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseListeners(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
			}
		case err != nil || got.String() != tt.want:
			t.Errorf("parseListeners(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if got, err := parseListenString("a=:1,b=udp://:2"); err != nil || got.String() != "a=:1,b=udp://:2" {
		t.Errorf("parseListenString = %v, %v", got, err)
	}
}

func TestListenersValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      []string
		wantErr string
	}{
		{in: []string{"http=127.0.0.1:80", "dns=udp://127.0.0.1:80"}}, // TCP and UDP share a port number
		{in: []string{"a=127.0.0.1:80", "b=127.0.0.1:80"}, wantErr: "are the same socket"},
		{in: []string{"a-b=127.0.0.1:80", "a_b=127.0.0.1:81"}, wantErr: "have the same name"},
		{in: []string{"a=127.0.0.1:0"}, wantErr: "not a number in 1..65535"},
		{in: []string{"a=udp://127.0.0.1"}, wantErr: "is not host:port"},
	}
	for _, tt := range tests {
		ls, err := parseListeners(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		err = ls.validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("validate(%q) = %v; want %q", tt.in, err, tt.wantErr)
		}
	}
	var many []string
	for i := range MaxListeners + 1 {
		many = append(many, fmt.Sprintf("l%d=127.0.0.1:%d", i, 1000+i))
	}
	ls, _ := parseListeners(many)
	if err := ls.validate(); err == nil || !strings.Contains(err.Error(), "more than 64") {
		t.Errorf("validate(65 listeners) = %v", err)
	}
}

// The state of a master before named listeners holds one address.
func TestListenersFromOldState(t *testing.T) {
	t.Parallel()
	var c struct{ Listen Listeners }
	if err := json.Unmarshal([]byte(`{"Listen":"127.0.0.1:8080"}`), &c); err != nil || c.Listen.String() != "default=127.0.0.1:8080" {
		t.Errorf("old state: %v, %v", c.Listen, err)
	}
	b, _ := json.Marshal(struct{ Listen Listeners }{Listen: Listeners{{Name: "dns", Network: NetUDP, Addr: ":53"}}})
	if err := json.Unmarshal(b, &c); err != nil || c.Listen.String() != "dns=udp://:53" {
		t.Errorf("round trip %s: %v, %v", b, c.Listen, err)
	}
}

// Every string parses to listeners that print back to what parses the
// same, or to an error; none panics.
func FuzzParseListeners(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "a=:1,b=udp://:2", "x=tcp://[::1]:3", "=", "a=b=c", "udp://", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := parseListenString(s)
		if err != nil {
			return
		}
		again, err := parseListenString(ls.String())
		if err != nil || !again.equal(ls) {
			t.Fatalf("%q parsed to %v, which parses to %v, %v", s, ls, again, err)
		}
	})
}
