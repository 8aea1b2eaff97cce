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

// -h is not a failure; main prints the usage, which names the flag and
// its variable.
func TestParseOptionsHelp(t *testing.T) {
	_, err := parseOptions([]string{"-h"}, func(string) (string, bool) { return "", false })
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseOptions(-h) = %v, want flag.ErrHelp", err)
	}
	var usage strings.Builder
	printUsage(&usage)
	for _, want := range []string{"-hang-after", "CHILD_HANG_AFTER"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage %q does not mention %s", usage.String(), want)
		}
	}
}
