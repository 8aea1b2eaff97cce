package cgroup

import (
	"fmt"
	"strings"
	"time"
)

// Parent is a cgroup v2 directory under which the master makes one cgroup
// per child: its own cgroup, from the "0::/path" line of /proc/self/cgroup
// joined to the cgroup2 mount point found in /proc/self/mountinfo.
type Parent struct {
	// Dir is the absolute path of the cgroup's directory, such as
	// /sys/fs/cgroup/system.slice/prefork.service.
	Dir string
}

// Group is the cgroup of one child, a leaf directory under a Parent. Its
// methods keep no state but the directory, so any goroutine may call them,
// a reaper's Remove included.
type Group struct {
	// Dir is the absolute path of the group's directory.
	Dir string
}

// StaleTimeout bounds how long New waits for a stale group of the same name
// to empty after killing it. A group that SIGKILL does not empty in this
// time holds a process in uninterruptible sleep, and New gives up on it.
const StaleTimeout = 5 * time.Second

// checkName refuses names that are not one plain directory entry, or that
// could be taken for an interface file of the parent.
func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("cgroup name %q: not a directory name", name)
	case strings.ContainsAny(name, "/\n\x00"):
		return fmt.Errorf("cgroup name %q: contains '/', newline or NUL", name)
	case strings.HasPrefix(name, "cgroup."):
		return fmt.Errorf("cgroup name %q: reserved for interface files", name)
	}
	return nil
}
