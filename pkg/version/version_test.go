package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name   string
		linked string
		info   *debug.BuildInfo
		want   string
	}{
		{name: "linked wins", linked: "v1.2.0-3-gabcdef0-dirty",
			info: &debug.BuildInfo{Main: debug.Module{Version: "v1.1.0"}, Settings: vcs("true")}, want: "v1.2.0-3-gabcdef0-dirty"},
		{name: "linked, no build info", linked: "abcdef0", want: "abcdef0"},
		{name: "linked with spaces stays one word", linked: " v1 rc1\n", want: "v1-rc1"},
		{name: "go install of a tag", info: &debug.BuildInfo{Main: debug.Module{Version: "v1.1.0"}}, want: "v1.1.0"},
		{name: "module version before revision",
			info: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-0123456789ab"}, Settings: vcs("false")},
			want: "v0.0.0-20260101000000-0123456789ab"},
		{name: "revision", info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")}, want: rev[:12]},
		{name: "dirty revision", info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, want: rev[:12] + "-dirty"},
		{name: "short revision", info: &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}}, want: "abc"},
		{name: "-buildvcs=false", info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, want: "dev"},
		{name: "no build info", want: "dev"},
		{name: "blank linked falls back", linked: "  ", want: "dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.linked, tc.info); got != tc.want {
				t.Errorf("resolve(%q, ...) = %q, want %q", tc.linked, got, tc.want)
			}
		})
	}
}

// String of the test binary: whatever it finds, one word, and the Go
// release of the toolchain.
func TestString(t *testing.T) {
	if v := String(); v == "" || strings.ContainsAny(v, " \t\n") {
		t.Errorf("String() = %q, want one non-empty word", v)
	}
	if g := GoVersion(); !strings.HasPrefix(g, "go") && !strings.HasPrefix(g, "devel") {
		t.Errorf("GoVersion() = %q", g)
	}
}
