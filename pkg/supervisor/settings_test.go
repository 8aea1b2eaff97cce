package supervisor

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The table itself: one entry per name, variables named after the flags,
// every flag documented, and every field of Config behind exactly one
// setting.
func TestSettingsTable(t *testing.T) {
	metavars := []string{"N", "ADDR", "[NAME=]ADDR", "D", "MODE", "PATH", "F", "SIZE", "U", "G", "FILE", "SIG"}
	seen := make(map[string]bool)
	for _, s := range Settings() {
		if seen[s.Name] {
			t.Errorf("%s: defined twice", s.Name)
		}
		seen[s.Name] = true
		if s.Usage == "" || strings.ContainsAny(s.Usage, "`\n") {
			t.Errorf("%s: usage %q must be one line without backticks (urfave/cli reads those)", s.Name, s.Usage)
		}
		if s.Flag() {
			want := "PREFORK_" + strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
			if s.Env != want {
				t.Errorf("%s: variable %s, want %s", s.Name, s.Env, want)
			}
			if !slices.Contains(metavars, s.Metavar) {
				t.Errorf("%s: metavar %q is none of %v", s.Name, s.Metavar, metavars)
			}
		}
		if !s.Flag() && !s.Key {
			t.Errorf("%s: neither a flag nor a key", s.Name)
		}
		if s.Name == ConfigSetting {
			if s.Key || !s.Flag() || s.bind.set != nil {
				t.Errorf("%s: must be a flag and variable only", s.Name)
			}
			continue
		}
		forms := 0
		for _, set := range []bool{s.bind.set != nil, s.bind.setList != nil, s.bind.setMap != nil} {
			if set {
				forms++
			}
		}
		// A repeated flag takes its list, and its variable (or a single
		// value in the file) the string form.
		if want := map[bool]int{false: 1, true: 2}[s.Repeat]; forms != want || s.bind.keep == nil ||
			s.Repeat && (s.bind.set == nil || s.bind.setList == nil) {
			t.Errorf("%s: must set a field of Config from exactly one form (a repeated one: a list and a string)", s.Name)
		}
	}

	// Setting each setting to a distinct value changes exactly one field:
	// no field is left without a setting, none has two.
	fields := reflect.TypeFor[Config]().NumField()
	var bound int
	for _, s := range Settings() {
		if s.bind.keep == nil {
			continue
		}
		bound++
		var zero, one Config
		if s.bind.setList != nil {
			if err := s.bind.setList(&one, []string{"x"}); err != nil {
				t.Fatal(err)
			}
		} else if s.bind.setMap != nil {
			if err := s.bind.setMap(&one, map[string]string{"X": "x"}); err != nil {
				t.Fatal(err)
			}
		} else if err := s.Set(&one, sample(s)); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if n := changedFields(zero, one); n != 1 {
			t.Errorf("%s: setting it changed %d fields of Config, want 1", s.Name, n)
		}
	}
	if bound != fields {
		t.Errorf("%d settings set a field of Config, which has %d fields", bound, fields)
	}
}

// sample is a valid, non-zero value of s in its string form.
func sample(s Setting) string {
	switch s.Metavar {
	case "N":
		return "3"
	case "D":
		return "2s"
	case "SIZE":
		return "1MiB"
	case "SIG":
		return "QUIT"
	}
	switch s.Name {
	case "ready":
		return "listen"
	case "reload-strategy":
		return StrategyRolling
	}
	return "x"
}

func changedFields(a, b Config) int {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	n := 0
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			n++
		}
	}
	return n
}

// The defaults shown to a user are DefaultConfig's: set from the shown
// text (prose read as what it means), nothing changes.
func TestSettingsDefaultsMatchConfig(t *testing.T) {
	prose := map[string]string{
		"off":               "0",
		"the master's":      "",
		"U's primary group": "",
	}
	for _, s := range Settings() {
		switch s.Name {
		case "workers", "control", ConfigSetting, "command", "env":
			continue // decided at run time, or no default to show
		}
		t.Run(s.Name, func(t *testing.T) {
			text, ok := prose[s.Default]
			if !ok {
				text = s.Default
			}
			want := DefaultConfig()
			got := want
			if err := s.Set(&got, text); err != nil {
				t.Fatalf("default %q does not parse: %v", s.Default, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("default shown as %q is not DefaultConfig's", s.Default)
			}
		})
	}
}

// A bad value reads the same whatever its source; the file adds its line.
func TestSettingSetErrors(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"workers", "abc", `workers: "abc" is not a whole number`},
		{"workers", "+4", `workers: "+4" is not a whole number`},
		{"ready-timeout", "soon", `ready-timeout: "soon" is not a duration such as 10s or 1m30s`},
		{"watchdog", "often", `watchdog: "often" is not a duration such as 10s or 1m30s`},
		{"max-accepts", "-3", "max-accepts: -3 must not be negative (0 turns it off)"},
		{"max-accepts", "lots", `max-accepts: "lots" is not a whole number`},
		{"max-rss", "big", `max-rss: "big" is not a size such as 512MiB, 2G or 1073741824`},
		{ConfigSetting, "x.yaml", "config: is not set from a single string"},
		{"command", "/bin/true", "command: is not set from a single string"},
	}
	for _, tt := range tests {
		s, ok := lookupSetting(tt.name)
		if !ok {
			t.Fatalf("no setting %s", tt.name)
		}
		c := DefaultConfig()
		err := s.Set(&c, tt.value)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Set(%s, %q) = %v, want %q", tt.name, tt.value, err, tt.want)
		}
		if !reflect.DeepEqual(c, DefaultConfig()) {
			t.Errorf("Set(%s, %q) failed but changed the config", tt.name, tt.value)
		}
		file := tt.name + ": " + tt.value + "\n"
		if s.Key && s.bind.set != nil {
			err := ParseConfigFile([]byte(file), &c)
			if err == nil || err.Error() != "line 1: "+tt.want {
				t.Errorf("ParseConfigFile(%q) = %v, want %q", file, err, "line 1: "+tt.want)
			}
		}
	}
}

func TestParseWhole(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "4", want: 4},
		{in: "0", want: 0},
		{in: "-2", want: -2},
		{in: "abc", wantErr: true},
		{in: "4x", wantErr: true},
		{in: "", wantErr: true},
		{in: " 4", wantErr: true},
		{in: "+4", wantErr: true},
		{in: "04", wantErr: true},
		{in: "4.0", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseWhole(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseWhole(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestKeepStartOnly(t *testing.T) {
	cur := validConfig()
	cur.Control = "/run/a.sock"
	tests := []struct {
		name     string
		change   func(*Config)
		wantKept []string
	}{
		{name: "nothing changed", change: func(*Config) {}},
		{
			name: "reloadable settings pass",
			change: func(c *Config) {
				c.Workers, c.Listen, c.Command, c.MaxRSS, c.User = 9, tcpListen(":81"), []string{"/bin/echo"}, 1, "nobody"
			},
		},
		{
			name:     "every start-only setting is kept",
			change:   func(c *Config) { c.Control, c.Metrics, c.LogFormat, c.Steer = "", ":9999", "json", SteerOff },
			wantKept: []string{"metrics", "control", "log-format", "steer"},
		},
		{
			name:     "mixed",
			change:   func(c *Config) { c.Workers, c.LogFormat, c.DrainTimeout = 2, "json", time.Minute },
			wantKept: []string{"log-format"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := cur
			tt.change(&next)
			got, kept := keepStartOnly(cur, next)
			if !slices.Equal(kept, tt.wantKept) {
				t.Errorf("kept %v, want %v", kept, tt.wantKept)
			}
			want := next
			want.Control, want.Metrics, want.LogFormat, want.Steer = cur.Control, cur.Metrics, cur.LogFormat, cur.Steer
			if !reflect.DeepEqual(got, want) {
				t.Errorf("keepStartOnly = %+v, want %+v", got, want)
			}
		})
	}
}

// The start-only settings are exactly those a reload cannot apply today:
// the master's own sockets, its log handler and the steering program.
func TestStartOnlySettings(t *testing.T) {
	var got []string
	for _, s := range Settings() {
		if !s.Reload && s.Key {
			got = append(got, s.Name)
		}
	}
	if want := []string{"metrics", "control", "log-format", "steer"}; !slices.Equal(got, want) {
		t.Errorf("start-only settings %v, want %v", got, want)
	}
}

func TestSuggestKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"wokers", "workers"},
		{"wrokers", "workers"},
		{"Workers", "workers"},
		{"worker", "workers"},
		{"ready_timeout", "ready-timeout"},
		{"readyTimeout", "ready-timeout"},
		{"max_rss", "max-rss"},
		{"maxrss", "max-rss"},
		{"log-fmt", "log-format"},
		{"watchdog-timeout", "watchdog"},
		{"commands", "command"},
		{"drain", "drain-timeout"}, // a shared prefix, one key has it
		{"max-memory", ""},         // "max-" leads to two keys
		{"timeout", ""},
		{"colour", ""},
		{"", ""},
		{"config", ""}, // a flag, not a key: said otherwise
		{strings.Repeat("w", 1000), ""},
	}
	for _, tt := range tests {
		if got := suggestKey(tt.in); got != tt.want {
			t.Errorf("suggestKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b  string
		limit int
		want  int
	}{
		{"", "", 3, 0},
		{"abc", "abc", 3, 0},
		{"wokers", "workers", 3, 1},
		{"wrokers", "workers", 3, 2},
		{"kitten", "sitting", 9, 3},
		{"kitten", "sitting", 3, 3},
		{"a", "abcdef", 3, 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b, tt.limit); got != tt.want {
			t.Errorf("editDistance(%q, %q, %d) = %d, want %d", tt.a, tt.b, tt.limit, got, tt.want)
		}
	}
}
