package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr string // a substring of the error; "" = no error
	}{
		{name: "default is no hang"},
		{name: "flag", args: []string{"-hang-after", "2s"}, want: options{hangAfter: 2 * time.Second}},
		{name: "double-dash flag", args: []string{"--hang-after=1m"}, want: options{hangAfter: time.Minute}},
		{name: "env", env: map[string]string{"CHILD_HANG_AFTER": "300ms"}, want: options{hangAfter: 300 * time.Millisecond}},
		{name: "empty env reads as unset", env: map[string]string{"CHILD_HANG_AFTER": ""}},
		{name: "flag wins over env", args: []string{"-hang-after=1s"}, env: map[string]string{"CHILD_HANG_AFTER": "5s"},
			want: options{hangAfter: time.Second}},
		{name: "flag zero turns the env's hang off", args: []string{"-hang-after=0"}, env: map[string]string{"CHILD_HANG_AFTER": "5s"}},
		{name: "malformed env", env: map[string]string{"CHILD_HANG_AFTER": "5"}, wantErr: "parse CHILD_HANG_AFTER"},
		{name: "malformed flag", args: []string{"-hang-after", "soon"}, wantErr: "hang-after"},
		{name: "negative flag", args: []string{"-hang-after=-1s"}, wantErr: "must not be negative"},
		{name: "negative env", env: map[string]string{"CHILD_HANG_AFTER": "-1s"}, wantErr: "must not be negative"},
		{name: "unknown flag", args: []string{"-hang"}, wantErr: "not defined"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "crash flag", args: []string{"--crash-after", "2s"}, want: options{crashAfter: 2 * time.Second}},
		{name: "crash env", env: map[string]string{"CHILD_CRASH_AFTER": "150ms"}, want: options{crashAfter: 150 * time.Millisecond}},
		{name: "crash flag wins over env", args: []string{"-crash-after=1s"}, env: map[string]string{"CHILD_CRASH_AFTER": "5s"},
			want: options{crashAfter: time.Second}},
		{name: "crash flag zero turns the env's crash off", args: []string{"-crash-after=0"}, env: map[string]string{"CHILD_CRASH_AFTER": "5s"}},
		{name: "malformed crash env", env: map[string]string{"CHILD_CRASH_AFTER": "soon"}, wantErr: "parse CHILD_CRASH_AFTER"},
		{name: "negative crash", args: []string{"-crash-after=-1s"}, wantErr: "crash-after must not be negative"},
		{name: "hang and crash", args: []string{"-hang-after=1s", "-crash-after=2s"},
			want: options{hangAfter: time.Second, crashAfter: 2 * time.Second}},
		{name: "ballast MiB", args: []string{"--ballast", "64MiB"}, want: options{ballast: 64 << 20}},
		{name: "ballast bytes", args: []string{"-ballast=4096"}, want: options{ballast: 4096}},
		{name: "ballast short units", args: []string{"-ballast=3K"}, want: options{ballast: 3 << 10}},
		{name: "ballast GiB", env: map[string]string{"CHILD_BALLAST": "1GiB"}, want: options{ballast: 1 << 30}},
		{name: "ballast B", env: map[string]string{"CHILD_BALLAST": "10B"}, want: options{ballast: 10}},
		{name: "ballast flag wins over env", args: []string{"-ballast=1M"}, env: map[string]string{"CHILD_BALLAST": "2M"},
			want: options{ballast: 1 << 20}},
		{name: "ballast at the cap", args: []string{"-ballast=16GiB"}, want: options{ballast: 16 << 30}},
		{name: "ballast over the cap", args: []string{"-ballast=17GiB"}, wantErr: "bad size"},
		{name: "ballast far over the cap", args: []string{"-ballast=9999999999G"}, wantErr: "bad size"},
		{name: "negative ballast", args: []string{"-ballast=-1"}, wantErr: "bad size"},
		{name: "ballast with a decimal unit", args: []string{"-ballast=64MB"}, wantErr: "bad size"},
		{name: "ballast without a number", args: []string{"-ballast=MiB"}, wantErr: "bad size"},
		{name: "malformed ballast env", env: map[string]string{"CHILD_BALLAST": "lots"}, wantErr: "parse CHILD_BALLAST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.args, func(name string) (string, bool) {
				v, ok := tt.env[name]
				return v, ok
			})
			if tt.wantErr == "" && err != nil {
				t.Fatalf("parseOptions error %v, want none", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("parseOptions error %v, want one with %q", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseOptions = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// -h is not a failure; main prints the usage, which names the flags and
// their variables.
func TestParseOptionsHelp(t *testing.T) {
	_, err := parseOptions([]string{"-h"}, func(string) (string, bool) { return "", false })
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseOptions(-h) = %v, want flag.ErrHelp", err)
	}
	var usage strings.Builder
	printUsage(&usage)
	for _, want := range []string{"-hang-after", "CHILD_HANG_AFTER", "-crash-after", "CHILD_CRASH_AFTER", "-ballast", "CHILD_BALLAST"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage %q does not mention %s", usage.String(), want)
		}
	}
}
