package sdwatchdog

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mapEnv looks variables up in env.
func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func TestParse(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     map[string]string
		want    time.Duration
		wantErr string // a substring of the error; "" = no error
	}{
		{name: "unset", env: map[string]string{}},
		{name: "empty reads as unset", env: map[string]string{"WATCHDOG_USEC": ""}},
		{name: "no pid", env: map[string]string{"WATCHDOG_USEC": "100000"}, want: 100 * time.Millisecond},
		{name: "empty pid reads as unset", env: map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, want: 30 * time.Second},
		{name: "our pid", env: map[string]string{"WATCHDOG_USEC": "1", "WATCHDOG_PID": "4242"}, want: time.Microsecond},
		{name: "another pid", env: map[string]string{"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}},
		{name: "another pid, malformed usec", env: map[string]string{"WATCHDOG_USEC": "soon", "WATCHDOG_PID": "1"}},
		{name: "pid without usec", env: map[string]string{"WATCHDOG_PID": "bad"}},
		{name: "malformed pid", env: map[string]string{"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "me"}, wantErr: "parse WATCHDOG_PID"},
		{name: "malformed usec", env: map[string]string{"WATCHDOG_USEC": "100ms"}, wantErr: "parse WATCHDOG_USEC"},
		{name: "zero usec", env: map[string]string{"WATCHDOG_USEC": "0"}, wantErr: "must be positive"},
		{name: "negative usec", env: map[string]string{"WATCHDOG_USEC": "-5"}, wantErr: "must be positive"},
		{name: "largest usec", env: map[string]string{"WATCHDOG_USEC": "9223372036854775"}, want: 9223372036854775 * time.Microsecond},
		{name: "usec past a Duration", env: map[string]string{"WATCHDOG_USEC": "9223372036854776"}, wantErr: "too large"},
		{name: "usec past int64", env: map[string]string{"WATCHDOG_USEC": "99999999999999999999"}, wantErr: "parse WATCHDOG_USEC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(mapEnv(tt.env), pid)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Parse error %v, want none", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Parse error %v, want one with %q", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Parse = %v, want %v", got, tt.want)
			}
		})
	}
}

// A malformed number wraps strconv's error.
func TestParseWrapsSyntaxError(t *testing.T) {
	_, err := Parse(mapEnv(map[string]string{"WATCHDOG_USEC": "soon"}), 1)
	if !errors.Is(err, strconv.ErrSyntax) {
		t.Errorf("Parse error %v, want one wrapping strconv.ErrSyntax", err)
	}
}

// Enabled reads the process's environment for its own pid, and leaves the
// variables set.
func TestEnabled(t *testing.T) {
	t.Setenv(EnvUSec, "250000")
	t.Setenv(EnvPID, strconv.Itoa(os.Getpid()))
	d, err := Enabled()
	if d != 250*time.Millisecond || err != nil {
		t.Fatalf("Enabled() = %v, %v; want 250ms", d, err)
	}
	if _, ok := os.LookupEnv(EnvUSec); !ok {
		t.Errorf("Enabled unset %s", EnvUSec)
	}
	t.Setenv(EnvPID, strconv.Itoa(os.Getpid()+1))
	if d, err := Enabled(); d != 0 || err != nil {
		t.Errorf("Enabled() for another pid = %v, %v; want 0 and no error", d, err)
	}
}
