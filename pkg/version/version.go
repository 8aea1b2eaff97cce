// Package version says which build of prefork is running: the version the
// Makefile links in, else what the Go toolchain recorded in the binary.
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Version is set at link time by the Makefile, from `git describe --always
// --dirty --tags`:
//
//	go build -ldflags "-X github.com/prefork/prefork/pkg/version.Version=v1.2.0-3-gabcdef0"
//
// Empty in a build without it (go build, go install, go test); String then
// falls back on the build info.
var Version string

// GoVersion returns the Go release the binary was built with, such as
// "go1.26.8".
func GoVersion() string { return runtime.Version() }

// String returns the version of this build: Version when linked in; else
// the module version `go install ...@vX` records, else the VCS revision
// the toolchain stamped (with "-dirty" for uncommitted changes; absent
// under -buildvcs=false); else "dev". Never empty, and never contains a
// space, so that it fits a log field, a label and one word of `master
// version`.
func String() string { return resolved() }

// resolved is String's answer, found once: neither input changes while
// the program runs.
var resolved = sync.OnceValue(func() string {
	info, _ := debug.ReadBuildInfo()
	return resolve(Version, info)
})

// unknown is the version of a build that records none.
const unknown = "dev"

// resolve is String's choice, given the linked version and the build info
// (nil when the binary has none).
func resolve(linked string, info *debug.BuildInfo) string {
	if v := strings.TrimSpace(linked); v != "" {
		return strings.Join(strings.Fields(v), "-")
	}
	if info == nil {
		return unknown
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return unknown
	}
	// 12 digits, as Go's pseudo-versions; enough to be unique in a repository.
	return rev[:min(len(rev), 12)] + dirty
}
