package supervisor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// readmeFlagsHeader is the header row of the README's flags table, the
// table this test holds to Settings.
const readmeFlagsHeader = "| flag | variable | default | reload | meaning |"

// readmeFlag is one row of the README's flags table, backticks removed.
type readmeFlag struct {
	line                                int
	flag, variable, defaultText, reload string
}

// parseReadmeFlags returns the rows of the table under readmeFlagsHeader.
func parseReadmeFlags(readme []byte) ([]readmeFlag, error) {
	sc := bufio.NewScanner(bytes.NewReader(readme))
	line, inTable := 0, false
	var rows []readmeFlag
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		switch {
		case !inTable:
			inTable = text == readmeFlagsHeader
		case strings.HasPrefix(text, "|---") || strings.HasPrefix(text, "| ---"):
			// The separator row.
		case strings.HasPrefix(text, "|"):
			// The meaning, last, may hold anything; the first four
			// cells hold no "|".
			cells := strings.SplitN(strings.Trim(text, "|"), "|", 5)
			if len(cells) < 5 {
				return nil, fmt.Errorf("README.md line %d: %d cells, want 5: %s", line, len(cells), text)
			}
			cell := func(i int) string { return strings.TrimSpace(strings.ReplaceAll(cells[i], "`", "")) }
			rows = append(rows, readmeFlag{line: line, flag: cell(0), variable: cell(1), defaultText: cell(2), reload: cell(3)})
		default:
			return rows, nil
		}
	}
	if !inTable {
		return nil, fmt.Errorf("README.md has no flags table: no line is exactly %q", readmeFlagsHeader)
	}
	return rows, sc.Err()
}

// The README's flags table says what Settings says: one row per flag,
// with its metavar, variable, default and whether a reload applies it.
func TestReadmeFlagsTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := parseReadmeFlags(readme)
	if err != nil {
		t.Fatalf("%v; the table Settings() is checked against has that header, then one row per flag such as\n"+
			"| `--workers N` | `PREFORK_WORKERS` | number of CPUs | yes | children per generation |", err)
	}
	want := make(map[string]Setting)
	for _, s := range Settings() {
		if s.Flag() {
			want["--"+s.Name+" "+s.Metavar] = s
		}
	}
	seen := make(map[string]int)
	for _, r := range rows {
		s, ok := want[r.flag]
		if !ok {
			t.Errorf("README.md line %d: %q is no flag of master run with its metavar (see Settings in pkg/supervisor/settings.go)", r.line, r.flag)
			continue
		}
		if first, dup := seen[r.flag]; dup {
			t.Errorf("README.md line %d: %s is listed again (first at line %d)", r.line, r.flag, first)
			continue
		}
		seen[r.flag] = r.line
		reload := map[bool]string{true: "yes", false: "no"}[s.Reload]
		for _, c := range []struct{ what, got, want string }{
			{"variable", r.variable, s.Env},
			{"default", r.defaultText, s.Default},
			{"reload", r.reload, reload},
		} {
			if c.got != c.want {
				t.Errorf("README.md line %d: %s: %s %q, Settings says %q", r.line, r.flag, c.what, c.got, c.want)
			}
		}
	}
	for _, s := range Settings() {
		flag := "--" + s.Name + " " + s.Metavar
		if _, ok := seen[flag]; s.Flag() && !ok {
			t.Errorf("README.md: the flags table has no row for %s (| `%s` | `%s` | %s | ... |)", flag, flag, s.Env, s.Default)
		}
	}
}

func TestParseReadmeFlags(t *testing.T) {
	readme := "# x\n\n" + readmeFlagsHeader + "\n|---|---|---|---|---|\n" +
		"| `--workers N` | `PREFORK_WORKERS` | number of CPUs | yes | children per generation |\n" +
		"| `--control PATH` | `PREFORK_CONTROL` | `$XDG_RUNTIME_DIR/prefork.sock`, else `/tmp/prefork-UID.sock` | no | a | b |\n" +
		"\nafter\n| not | this |\n"
	rows, err := parseReadmeFlags([]byte(readme))
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeFlag{
		{line: 5, flag: "--workers N", variable: "PREFORK_WORKERS", defaultText: "number of CPUs", reload: "yes"},
		{line: 6, flag: "--control PATH", variable: "PREFORK_CONTROL",
			defaultText: "$XDG_RUNTIME_DIR/prefork.sock, else /tmp/prefork-UID.sock", reload: "no"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows = %+v, want %+v", rows, want)
	}
	if _, err := parseReadmeFlags([]byte("| flag | variable | default | meaning |\n")); err == nil {
		t.Error("a README without the header parsed")
	}
}
