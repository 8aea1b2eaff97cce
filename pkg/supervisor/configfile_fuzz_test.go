package supervisor

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// commentsOnly matches a file of nothing but blank lines and comments.
var commentsOnly = regexp.MustCompile(`^(?:[ \t\r]*(?:#[^\n]*)?\n?)*$`)

// FuzzConfigFile reads bytes as a config file's content, as a reload does
// after reading the file: it never panics; a refused file changes nothing
// and says why in one line; a file that sets nothing is always refused; an
// accepted one either validates or Validate says why in one line. The seed
// corpus (here and in testdata/fuzz/FuzzConfigFile) runs in every
// `go test`.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"",
		"\n\n",
		" \t\n",
		"# only a comment\n",
		"---\n",
		"~\n",
		"{}\n",
		"workers: 2\nlisten: 127.0.0.1:8080\ncommand: [/bin/sh, -c, 'exec sleep 1']\n",
		"workers: 2\nlisten: 127.0.0.1:80", // truncated mid-line
		"workers: 2\nlisten: \"127.0.0.1:80",
		"workers: 0\n",
		"workers: 99999999999999999999\n",
		"ready: delay:1h\nready-timeout: 1s\n",
		"steer: on\nsockets: child\n",
		"env: {A: \"x\\ny\"}\n",
		"command: [\"\"]\n",
		"command: [/bin/sh, \"{port\"]\n",
		"max-rss: 1e400GiB\n",
		"\xff\xfe\x00w\x00o\x00",
		"workers: 3\nlisten: 127.0.0.1:9000\ncommand: [/bin/echo, hi]\n",
		"max-rss: 1.5GiB\nmax-accepts: 10\nwatchdog: 1s\n",
		"wokers: 3\n",
		"- a\n",
		"a: &x [*x]\ncommand: *x\n",
		"workers: 1\n---\nworkers: 2\n",
		"<<: {workers: 2}\n",
		"command: [[a]]\n",
		"? [a]\n: b\n",
		"workers: [\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := validConfig()
		err := ParseConfigFile(data, &cfg)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans more than one line", err)
			}
			if !reflect.DeepEqual(cfg, validConfig()) {
				t.Errorf("a refused file changed the config")
			}
		}
		switch {
		case len(bytes.TrimSpace(data)) == 0 && !errors.Is(err, ErrEmptyConfigFile):
			t.Errorf("a blank file: %v, want ErrEmptyConfigFile", err)
		case commentsOnly.Match(data) && err == nil:
			// Refused either way: as empty, or as not YAML (a control
			// character in a comment).
			t.Errorf("a file of only comments was accepted")
		}
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Validate error %q spans more than one line", err)
		}
	})
}
