package main

import (
	"bytes"
	"testing"

	"github.com/prefork/prefork/pkg/version"
)

// `master version` is one line: "master VERSION (GOVERSION)".
func TestVersionCommand(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"master", "version"}); err != nil {
		t.Fatal(err)
	}
	if want := "master " + version.String() + " (" + version.GoVersion() + ")\n"; out.String() != want {
		t.Errorf("master version printed %q, want %q", out.String(), want)
	}
}
