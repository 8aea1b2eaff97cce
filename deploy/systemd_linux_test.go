package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/supervisor"
)

const unitFile = "systemd/prefork.service"

// unit is a parsed unit file: section -> key -> every value, in order.
type unit map[string]map[string][]string

// parseUnit reads the subset of the unit file syntax the shipped files use:
// sections, Key=Value lines and comments (no line continuations).
func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasSuffix(line, "\\"):
			return nil, fmt.Errorf("line %d: continuation lines are not supported here", n)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: not Key=Value in a section: %q", n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u, sc.Err()
}

// get returns the last value of key, the one systemd uses.
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// systemdSeconds parses the two spellings of a time span the unit uses: a
// plain number of seconds or a Go-style duration such as 45s.
func systemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: write it as 45s or 45 for this test", s)
	}
	return d, nil
}

// TestSystemdUnitVerifies runs systemd's own checker on the unit. It exits
// 0 on an unknown key or a bad value (systemd ignores those at run time
// too), so every line it prints about the unit fails the test.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := lookTool(t, "systemd-analyze", "Debian package systemd")
	unitText := string(readFile(t, unitFile))

	t.Run("shipped unit", func(t *testing.T) {
		if problems := verifyUnit(t, analyze, unitText); len(problems) > 0 {
			t.Errorf("systemd-analyze verify %s:\n%s", unitFile, strings.Join(problems, "\n"))
		}
	})
	// systemd-analyze's way of reporting is all this test relies on: a
	// change in it must not turn the test above into one that cannot fail.
	t.Run("misspelt directive is caught", func(t *testing.T) {
		broken := strings.Replace(unitText, "\nKillMode=", "\nKilMode=", 1)
		if broken == unitText {
			t.Fatal("the unit has no KillMode= to misspell")
		}
		if problems := verifyUnit(t, analyze, broken); len(problems) == 0 {
			t.Error("systemd-analyze verify found nothing wrong with KilMode=")
		}
	})
}

// verifyUnit runs systemd-analyze verify on a copy of unitText and returns
// the lines it printed about that unit. verify insists that ExecStart's
// binary exists, so the copy starts this test binary instead: any
// executable does, nothing is run.
func verifyUnit(t *testing.T, analyze, unitText string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, path.Base(unitFile))
	text := strings.ReplaceAll(unitText, "/usr/local/bin/prefork ", exe+" ")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, dir, analyze, "verify", file)
	var problems []string
	if err != nil {
		problems = append(problems, "exit: "+err.Error())
	}
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		if line == "" {
			continue
		}
		// The units it pulls in (network-online.target and theirs) belong
		// to the host, whose warnings are not ours to fix.
		if f, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(f, "/") && f != file {
			t.Logf("ignored, about another unit: %s", line)
			continue
		}
		problems = append(problems, line)
	}
	return problems
}

func TestSystemdUnitInvariants(t *testing.T) {
	u, err := parseUnit(readFile(t, unitFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := supervisor.DefaultConfig()
	if err := supervisor.ParseConfigFile(readFile(t, "systemd/prefork.yaml"), &cfg); err != nil {
		t.Fatalf("systemd/prefork.yaml: %v", err)
	}
	for _, err := range checkUnit(u, cfg) {
		t.Error(err)
	}
}

// The settings shown commented out in the example config ("#key: value")
// are real keys with valid values: uncommented, they parse.
func TestSystemdExampleOptionalKeys(t *testing.T) {
	data := readFile(t, "systemd/prefork.yaml")
	uncommented := commentedSetting.ReplaceAll(data, []byte("$1"))
	if commentedSetting.Find(data) == nil {
		t.Fatal("no commented-out setting in systemd/prefork.yaml")
	}
	cfg := supervisor.DefaultConfig()
	if err := supervisor.ParseConfigFile(uncommented, &cfg); err != nil {
		t.Errorf("systemd/prefork.yaml with its optional settings: %v", err)
	}
}

var commentedSetting = regexp.MustCompile(`(?m)^#([a-z][a-z-]*: .*)$`)

// checkUnit returns what would make the unit and the config it reads work
// against each other.
func checkUnit(u unit, cfg supervisor.Config) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for key, want := range map[string]string{
		// READY=1 only once every slot serves, so `systemctl start` waits.
		"Type": "notify",
		// The children speak sd_notify to the master; systemd hears only it.
		"NotifyAccess": "main",
		// SIGTERM to the master alone: the master drains the children.
		"KillMode": "mixed",
		// The children's cgroups below the service's are the master's.
		"Delegate": "yes",
	} {
		if got := u.get("Service", key); got != want {
			fail("%s=%s, want %s", key, got, want)
		}
	}
	stop, err := systemdSeconds(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		fail("TimeoutStopSec: %v", err)
	} else if stop <= cfg.DrainTimeout {
		fail("TimeoutStopSec=%v is not above drain-timeout %v: systemd would SIGKILL draining children", stop, cfg.DrainTimeout)
	}
	start := strings.Fields(u.get("Service", "ExecStart"))
	reload := strings.Fields(u.get("Service", "ExecReload"))
	if len(start) < 2 || start[0] != preforkBinary || start[1] != "run" {
		fail("ExecStart=%q, want %s run ...", start, preforkBinary)
	}
	if len(reload) < 2 || reload[0] != preforkBinary || reload[1] != "reload" {
		fail("ExecReload=%q, want %s reload ...", reload, preforkBinary)
	}
	if want := "/etc/" + u.get("Service", "ConfigurationDirectory") + "/prefork.yaml"; flagValue(start, "--config") != want {
		fail("ExecStart --config %q, want %s (ConfigurationDirectory=, readable under ProtectSystem=strict)", flagValue(start, "--config"), want)
	}
	control := flagValue(start, "--control")
	if want := "%t/" + u.get("Service", "RuntimeDirectory") + "/"; !strings.HasPrefix(control, want) {
		fail("ExecStart --control %q is not in RuntimeDirectory= (%s), the one writable place", control, want)
	}
	if got := flagValue(reload, "--control"); got != control {
		fail("ExecReload --control %q differs from ExecStart's %q", got, control)
	}
	if r := u.get("Service", "Restart"); r != "on-failure" && r != "always" {
		fail("Restart=%q: a failed master would stay down", r)
	}
	// Master socket mode stores a listener per slot; a reload to another
	// address holds two sets.
	if n, err := strconv.Atoi(u.get("Service", "FileDescriptorStoreMax")); err != nil || n < 2*cfg.Workers {
		fail("FileDescriptorStoreMax=%q: want at least %d, twice the workers of prefork.yaml, for the listeners to outlive a crash of the master",
			u.get("Service", "FileDescriptorStoreMax"), 2*cfg.Workers)
	}
	return errs
}

// Each invariant of checkUnit fails on a unit broken in its way.
func TestSystemdCheckFails(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"stop timeout below drain", "TimeoutStopSec", "30s", "TimeoutStopSec"},
		{"kill mode", "KillMode", "control-group", "KillMode"},
		{"notify access", "NotifyAccess", "all", "NotifyAccess"},
		{"reload elsewhere", "ExecReload", "/usr/local/bin/prefork reload --control /tmp/x.sock", "ExecReload --control"},
		{"control outside the runtime directory", "RuntimeDirectory", "other", "RuntimeDirectory"},
		{"fd store too small", "FileDescriptorStoreMax", "1", "FileDescriptorStoreMax"},
		{"no fd store", "FileDescriptorStoreMax", "", "FileDescriptorStoreMax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := parseUnit(readFile(t, unitFile))
			if err != nil {
				t.Fatal(err)
			}
			cfg := supervisor.DefaultConfig()
			cfg.DrainTimeout = 30 * time.Second
			u["Service"][tc.key] = []string{tc.value}
			errs := checkUnit(u, cfg)
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Fatalf("errors %v, want one about %s", errs, tc.want)
			}
		})
	}
}

// The drop-in sets exactly the setting the master reads and warns about.
func TestSysctlDropIn(t *testing.T) {
	want := strings.ReplaceAll(strings.TrimPrefix(sockopt.MigrateReqPath, "/proc/sys/"), "/", ".")
	settings := map[string]string{}
	for line := range strings.Lines(string(readFile(t, "systemd/99-prefork.conf"))) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not key = value: %q", line)
		}
		settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if len(settings) != 1 || settings[want] != "1" {
		t.Errorf("settings %v, want only %s = 1", settings, want)
	}
}
