package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// errNoV2 is why Own fails on a host with cgroup v1 only: no cgroup2 mount,
// or, as the kernel shows the "0::" line only once cgroup2 was mounted, no
// such line.
var errNoV2 = errors.New("no cgroup v2 mounted")

// mount is a cgroup2 mount from /proc/self/mountinfo.
type mount struct {
	// root is the directory of the hierarchy that is mounted: "/" unless
	// it is a bind mount of a subtree, or was mounted inside a cgroup
	// namespace whose root is not the host's.
	root string
	// point is where it is mounted, such as /sys/fs/cgroup.
	point string
}

// parseMountinfo returns the cgroup2 mounts of a mountinfo file, in the
// order listed. A line is (proc(5)):
//
//	36 35 98:0 /root /point rw,noatime master:1 - cgroup2 cgroup2 rw
//
// with a variable number of optional fields before "-", and paths whose
// space, tab, newline and backslash are escaped in octal (\040).
func parseMountinfo(data []byte) ([]mount, error) {
	var ms []mount
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, " ")
		sep := -1
		for j := 6; j < len(f); j++ {
			if f[j] == "-" {
				sep = j
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) {
			return nil, fmt.Errorf("parse mountinfo line %d %q: malformed", i+1, line)
		}
		if f[sep+1] != "cgroup2" {
			continue
		}
		ms = append(ms, mount{root: unescapeOctal(f[3]), point: unescapeOctal(f[4])})
	}
	return ms, nil
}

// unescapeOctal undoes the kernel's escaping of paths in mountinfo (a
// backslash and three octal digits per byte).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// parseProcCgroup returns the cgroup v2 path of /proc/PID/cgroup, the path
// of its "0::" line. Its other lines, "ID:controllers:path", are v1
// hierarchies (hybrid hosts), and a host with v1 only has no "0::" line.
func parseProcCgroup(data []byte) (string, error) {
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || f[0] != "0" || f[1] != "" {
			continue
		}
		if !strings.HasPrefix(f[2], "/") {
			return "", fmt.Errorf("parse /proc/self/cgroup line %q: path not absolute", line)
		}
		return f[2], nil
	}
	return "", errNoV2
}

// resolve returns the directory of the cgroup at path (as in
// /proc/self/cgroup) through the mount whose root holds it, the deepest one
// if several do.
func resolve(ms []mount, cgPath string) (string, error) {
	if len(ms) == 0 {
		return "", errNoV2
	}
	// A process moved out of its cgroup namespace sees a path that climbs
	// above the namespace's root, which no mount of this namespace shows.
	if cgPath == "/.." || strings.HasPrefix(cgPath, "/../") {
		return "", fmt.Errorf("own cgroup %s: outside this cgroup namespace", cgPath)
	}
	best, dir := -1, ""
	for _, m := range ms {
		rel, ok := under(m.root, cgPath)
		if ok && len(m.root) >= best {
			best, dir = len(m.root), path.Join(m.point, rel)
		}
	}
	if best < 0 {
		err := fmt.Errorf("own cgroup %s: not under any cgroup2 mount (roots: %s)", cgPath, roots(ms))
		// A root above "/" is a mount made outside this process's cgroup
		// namespace (unshare -C after the mount): it shows cgroups this
		// namespace cannot name.
		for _, m := range ms {
			if m.root == "/.." || strings.HasPrefix(m.root, "/../") {
				return "", fmt.Errorf("%w; mount cgroup2 again inside this cgroup namespace", err)
			}
		}
		return "", err
	}
	return dir, nil
}

// under returns p relative to root if p is root or below it.
func under(root, p string) (string, bool) {
	if root == "/" {
		return p, true
	}
	root = strings.TrimSuffix(root, "/")
	if p == root {
		return "/", true
	}
	if rel, ok := strings.CutPrefix(p, root+"/"); ok {
		return "/" + rel, true
	}
	return "", false
}

func roots(ms []mount) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.root+" at "+m.point)
	}
	return strings.Join(s, ", ")
}

// parseEvents returns the "populated" key of cgroup.events: whether the
// group or a group below it holds a live process.
func parseEvents(data []byte) (bool, error) { return parseEventsFlag(data, "populated") }

// parseFrozen returns the "frozen" key of cgroup.events: whether every
// process of the group and of the groups below it is frozen (an empty
// group whose freeze was asked for counts as frozen).
func parseFrozen(data []byte) (bool, error) { return parseEventsFlag(data, "frozen") }

// parseEventsFlag returns a key of cgroup.events whose value is 0 or 1.
func parseEventsFlag(data []byte, key string) (bool, error) {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			switch v {
			case "0":
				return false, nil
			case "1":
				return true, nil
			}
			return false, fmt.Errorf("parse cgroup.events: %s %q", key, v)
		}
	}
	return false, fmt.Errorf("parse cgroup.events: no %s key in %q", key, data)
}

// parseFreeze parses cgroup.freeze: "1" when a freeze of the group was
// asked for (by anyone), "0" otherwise.
func parseFreeze(data []byte) (bool, error) {
	switch v := strings.TrimSpace(string(data)); v {
	case "0":
		return false, nil
	case "1":
		return true, nil
	default:
		return false, fmt.Errorf("parse cgroup.freeze: %q", v)
	}
}

// parsePids parses cgroup.procs, one pid a line.
func parsePids(data []byte) ([]int, error) {
	var pids []int
	for _, f := range bytes.Fields(data) {
		pid, err := strconv.Atoi(string(f))
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// parseState returns the "State:" of /proc/PID/status, such as
// "D (disk sleep)", or "" if there is none.
func parseState(status []byte) string {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parseCPUStat reads the usage_usec line of a cpu.stat file.
func parseCPUStat(data []byte) (time.Duration, error) {
	for _, line := range strings.Split(string(data), "\n") {
		v, ok := strings.CutPrefix(line, "usage_usec ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 63)
		if err != nil {
			return 0, fmt.Errorf("cpu.stat: usage_usec %q: %w", v, err)
		}
		return time.Duration(n) * time.Microsecond, nil
	}
	return 0, fmt.Errorf("cpu.stat: no usage_usec line")
}
