package child

import (
	"fmt"
	"testing"
	"time"
)

// mapEnv is a lookupFunc over a fixed environment.
func mapEnv(env map[string]string) lookupFunc {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Info
		wantErr bool
	}{
		{name: "standalone", env: map[string]string{}, want: Info{}},
		{
			name: "supervised",
			env: map[string]string{
				"PREFORK_SLOT": "3", "PREFORK_GENERATION": "7", "PREFORK_WORKERS": "8",
				"PREFORK_DRAIN_TIMEOUT": "30s",
			},
			want: Info{Slot: 3, Generation: 7, Workers: 8, Supervised: true, DrainTimeout: 30 * time.Second},
		},
		{name: "slot 0 is supervised", env: map[string]string{"PREFORK_SLOT": "0"}, want: Info{Supervised: true}},
		{name: "empty reads as unset", env: map[string]string{"PREFORK_SLOT": "", "PREFORK_DRAIN_TIMEOUT": ""}, want: Info{}},
		{name: "zero drain timeout", env: map[string]string{"PREFORK_DRAIN_TIMEOUT": "0"}, want: Info{}},
		{name: "malformed slot", env: map[string]string{"PREFORK_SLOT": "one"}, wantErr: true},
		{name: "negative slot", env: map[string]string{"PREFORK_SLOT": "-1"}, wantErr: true},
		{name: "malformed generation", env: map[string]string{"PREFORK_GENERATION": "1.5"}, wantErr: true},
		{name: "malformed workers", env: map[string]string{"PREFORK_WORKERS": "8 "}, wantErr: true},
		{name: "drain timeout without unit", env: map[string]string{"PREFORK_DRAIN_TIMEOUT": "30"}, wantErr: true},
		{name: "negative drain timeout", env: map[string]string{"PREFORK_DRAIN_TIMEOUT": "-1s"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnv(mapEnv(tt.env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseEnv error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseEnv = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Env reads the process environment.
func TestEnv(t *testing.T) {
	t.Setenv("PREFORK_SLOT", "2")
	t.Setenv("PREFORK_GENERATION", "4")
	t.Setenv("PREFORK_WORKERS", "6")
	t.Setenv("PREFORK_DRAIN_TIMEOUT", "")
	got, err := Env()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Slot: 2, Generation: 4, Workers: 6, Supervised: true}); got != want {
		t.Fatalf("Env = %+v, want %+v", got, want)
	}
}

func TestDrainSignals(t *testing.T) {
	tests := []struct {
		name       string
		supervised bool
		notify     string
		ignore     string
	}{
		{name: "standalone drains on TERM and INT", supervised: false, notify: "[terminated interrupt]", ignore: "[]"},
		{name: "supervised drains on TERM, ignores INT", supervised: true, notify: "[terminated]", ignore: "[interrupt]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notify, ignore := drainSignals(tt.supervised)
			if got := fmt.Sprint(notify); got != tt.notify {
				t.Errorf("notify = %s, want %s", got, tt.notify)
			}
			if got := fmt.Sprint(ignore); got != tt.ignore {
				t.Errorf("ignore = %s, want %s", got, tt.ignore)
			}
		})
	}
}
