package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Process limits. Linux counts every task (process or thread) against two
// limits a master without privileges shares with its children: the
// RLIMIT_NPROC of its real uid, checked at clone(2) against the limit of
// the task that clones, and the pids.max of its cgroup and their
// ancestors (systemd's TasksMax=). When children exhaust either, any
// thread the Go runtime of the master then tries to make fails, and the
// runtime aborts the master, and every child with it. So:
//
//   - At start, reserveThreads makes the threads the master will need
//     while the limit is free: the runtime never ends an idle thread, and
//     reuses those instead of making new ones later.
//   - Under RLIMIT_NPROC, children get a lower limit than the master's
//     (nprocLimit): the soft limit is lowered during the fork (the child
//     is born with it; the master's fork itself then fails first), and the
//     child's hard limit is lowered right after, so that it cannot raise
//     the soft one back. The master keeps the difference for itself.
//   - A fork that fails with EAGAIN is a failed start of its slot, with an
//     error that names the limit (forkLimitError).

// nprocLimit is the RLIMIT_NPROC that applies to the master's children.
type nprocLimit struct {
	uid   int    // the real uid whose tasks count
	soft  uint64 // the master's soft limit
	child uint64 // the children's: soft less the master's headroom
	// unrestored is the master's own limit when giving it back after a
	// fork failed: forkWith gives it back before it forks again. Only
	// the spawner's thread, which calls forkWith, touches it.
	unrestored *unix.Rlimit
}

// nprocHeadroom is how many tasks of the limit the children leave to the
// master: an eighth, at least 4, at most 64.
func nprocHeadroom(soft uint64) uint64 { return min(max(soft/8, 4), 64) }

// readNprocLimit returns the master's RLIMIT_NPROC, or nil when the kernel
// does not apply it to the master: root of the initial user namespace, a
// master with CAP_SYS_RESOURCE or CAP_SYS_ADMIN, or no limit.
func readNprocLimit() *nprocLimit {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return nil
	}
	uid := os.Getuid()
	if initUserNS() && (uid == 0 || hasCap(capSysAdmin) || hasCap(capSysResource)) {
		return nil
	}
	return &nprocLimit{uid: uid, soft: rl.Cur, child: max(rl.Cur-min(nprocHeadroom(rl.Cur), rl.Cur), 1)}
}

// Capabilities that exempt from RLIMIT_NPROC.
const (
	capSysAdmin    = 21
	capSysResource = 24
)

// hasCap reports whether the master's effective set has capability c.
func hasCap(c uint) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && set&(1<<c) != 0
		}
	}
	return false
}

// initUserNS reports whether the master runs in the initial user
// namespace, where uid 0 is the root the kernel exempts from RLIMIT_NPROC.
func initUserNS() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	return err == nil && strings.Join(strings.Fields(string(data)), " ") == "0 0 4294967295"
}

// forkWith runs fork (the spawner's fork and exec of one child whose real
// uid is uid) under the children's limit: the master's soft limit is
// lowered for the duration of the fork, so that the fork fails once the
// uid has child tasks or more, and the child starts with that limit. Then
// the child's hard limit is lowered too. The master's own threads are
// checked against the lowered limit only during the fork; the reserve
// (reserveThreads) is what keeps the runtime from making any then.
//
// Should the master's limit fail to come back after the fork, the master
// would run on with the children's: forkWith kills the child it has just
// forked and returns an error (a failed start of its slot, which the
// supervisor logs), and tries again before the next fork, which it makes
// only once the limit is back.
func (l *nprocLimit) forkWith(uid int, fork func() (int, error)) (int, error) {
	if l == nil || uid != l.uid {
		// Another uid's tasks count for that uid: nothing of ours.
		return fork()
	}
	if l.unrestored != nil {
		if err := unix.Prlimit(0, unix.RLIMIT_NPROC, l.unrestored, nil); err != nil {
			return 0, restoreError(l.unrestored, err)
		}
		l.unrestored = nil
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &old); err != nil {
		return fork()
	}
	limit := min(l.child, old.Cur)
	lowered := unix.Prlimit(0, unix.RLIMIT_NPROC, &unix.Rlimit{Cur: limit, Max: old.Max}, nil) == nil
	pid, err := fork()
	if lowered {
		if rerr := unix.Prlimit(0, unix.RLIMIT_NPROC, &old, nil); rerr != nil {
			l.unrestored = &old
			if err == nil {
				// The reaper (wait4 of any child) collects it.
				unix.Kill(pid, unix.SIGKILL)
			}
			return 0, restoreError(&old, rerr)
		}
	}
	if err == nil {
		// It may have exited already, or made itself unreachable by a
		// setuid program: then there is nothing to lower.
		unix.Prlimit(pid, unix.RLIMIT_NPROC, &unix.Rlimit{Cur: limit, Max: limit}, nil)
	}
	return pid, err
}

// restoreError says that the master's RLIMIT_NPROC could not be set back
// to old. The errno is in the text only: an EPERM that errors.Is finds
// would read as clone3 refused (osProcs.start).
func restoreError(old *unix.Rlimit, err error) error {
	return fmt.Errorf("the master's RLIMIT_NPROC, lowered for the fork of a child, cannot be set back to %d: %v; no child of its uid is started until it is",
		old.Cur, err)
}

// reserveThreads makes n OS threads at once and leaves them idle: each of
// n goroutines locks itself to a thread of its own, and once all are
// locked they unlock and end. The Go runtime never ends an idle thread; it
// reuses these before it makes any.
func reserveThreads(n int) {
	var locked, done sync.WaitGroup
	release := make(chan struct{})
	for range n {
		locked.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			locked.Done()
			<-release
			runtime.UnlockOSThread()
		})
	}
	locked.Wait()
	close(release)
	done.Wait()
}

// threadReserve is how many threads reserveThreads makes: enough for
// every P to run while as many goroutines again sit in system calls, and
// no more than a quarter of what the limits leave (room, -1: unknown).
func threadReserve(procs, room int) int {
	n := procs + 6
	if room >= 0 {
		n = min(n, room/4)
	}
	return max(n, 0)
}

// uidTasks counts the tasks (processes and threads) of real uid that
// /proc shows.
func uidTasks(uid int) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		if real, threads, ok := parseStatusTasks(data); ok && real == uid {
			n += threads
		}
	}
	return n
}

// parseStatusTasks returns the real uid and thread count of a
// /proc/PID/status.
func parseStatusTasks(data []byte) (uid, threads int, ok bool) {
	seen := 0
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		k, v, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		f := strings.Fields(string(v))
		if len(f) == 0 {
			continue
		}
		var err error
		switch string(k) {
		case "Uid":
			uid, err = strconv.Atoi(f[0])
			seen++
		case "Threads":
			threads, err = strconv.Atoi(f[0])
			seen++
		}
		if err != nil {
			return 0, 0, false
		}
	}
	return uid, threads, seen == 2
}

// pidsLimit is a cgroup's pids.max and pids.current.
type pidsLimit struct {
	dir          string
	max, current int
}

// pidsLimits returns the finite pids limits of the master's cgroups, v2
// and v1, from its own up to the root of their mounts.
func pidsLimits() []pidsLimit {
	mi, err1 := os.ReadFile("/proc/self/mountinfo")
	cg, err2 := os.ReadFile("/proc/self/cgroup")
	if err1 != nil || err2 != nil {
		return nil
	}
	var out []pidsLimit
	for _, dir := range pidsDirs(mi, cg) {
		for mount := dir.mount; ; {
			if l, ok := readPidsLimit(dir.path); ok {
				out = append(out, l)
			}
			if dir.path == mount || !strings.HasPrefix(dir.path, mount+"/") {
				break
			}
			dir.path = filepath.Dir(dir.path)
		}
	}
	return out
}

func readPidsLimit(dir string) (pidsLimit, bool) {
	mx, err1 := os.ReadFile(filepath.Join(dir, "pids.max"))
	cur, err2 := os.ReadFile(filepath.Join(dir, "pids.current"))
	if err1 != nil || err2 != nil {
		return pidsLimit{}, false
	}
	m, err1 := strconv.Atoi(strings.TrimSpace(string(mx)))
	c, err2 := strconv.Atoi(strings.TrimSpace(string(cur)))
	if err1 != nil || err2 != nil { // "max": no limit
		return pidsLimit{}, false
	}
	return pidsLimit{dir: dir, max: m, current: c}, true
}

// cgroupDir is the master's cgroup in a mount that has the pids
// controller.
type cgroupDir struct{ mount, path string }

// pidsDirs finds, from mountinfo and /proc/self/cgroup, the master's
// cgroup directories where a pids.max may apply: the cgroup2 one, and the
// v1 hierarchy with the pids controller.
func pidsDirs(mountinfo, procCgroup []byte) []cgroupDir {
	paths := map[string]string{} // "v2" or "pids": the path in /proc/self/cgroup
	for line := range strings.SplitSeq(string(procCgroup), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			paths["v2"] = f[2]
		case hasWord(f[1], "pids"):
			paths["pids"] = f[2]
		}
	}
	var dirs []cgroupDir
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		kind := ""
		switch {
		case g[0] == "cgroup2":
			kind = "v2"
		case g[0] == "cgroup" && hasWord(g[2], "pids"):
			kind = "pids"
		}
		p, ok := paths[kind]
		if kind == "" || !ok {
			continue
		}
		root, mount := f[3], f[4]
		rel := p
		if root != "/" {
			if rel, ok = strings.CutPrefix(p, root); !ok || rel != "" && rel[0] != '/' {
				continue // the master's cgroup is outside this mount
			}
		}
		dirs = append(dirs, cgroupDir{mount: mount, path: filepath.Join(mount, rel)})
	}
	return dirs
}

func hasWord(list, w string) bool {
	for s := range strings.SplitSeq(list, ",") {
		if s == w {
			return true
		}
	}
	return false
}

// forkLimitError is a fork that failed with EAGAIN, with what the limit
// reached most likely was.
type forkLimitError struct {
	cause string // the limit, for the log and for saying it once
	err   error
}

func (e *forkLimitError) Error() string { return e.err.Error() + ": " + e.cause }
func (e *forkLimitError) Unwrap() error { return e.err }

// saidOnce marks an error osProcs has said once for every slot.
func (e *forkLimitError) saidOnce() {}

// explainFork returns err, or for EAGAIN a forkLimitError that says which
// limit was reached: a pids limit of the master's cgroups that is full,
// else the RLIMIT_NPROC of uid when it applies, else the system's.
func explainFork(err error, uid int, nproc *nprocLimit) error {
	if !errors.Is(err, unix.EAGAIN) {
		return err
	}
	return explainForkLimits(err, uid, nproc, pidsLimits())
}

// explainForkLimits is explainFork for an EAGAIN, given the pids limits
// of the master's cgroups.
func explainForkLimits(err error, uid int, nproc *nprocLimit, pids []pidsLimit) error {
	for _, l := range pids {
		if l.current+2 >= l.max {
			return &forkLimitError{err: err, cause: fmt.Sprintf("the pids limit of cgroup %s (pids.max %d) is reached", l.dir, l.max)}
		}
	}
	if nproc != nil && uid == nproc.uid {
		return &forkLimitError{err: err, cause: fmt.Sprintf("the process limit of uid %d (RLIMIT_NPROC %d, of which the children may use %d) is reached",
			uid, nproc.soft, nproc.child)}
	}
	var rl unix.Rlimit
	if uid != os.Getuid() && unix.Getrlimit(unix.RLIMIT_NPROC, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
		return &forkLimitError{err: err, cause: fmt.Sprintf("the process limit of uid %d (RLIMIT_NPROC %d) may be reached", uid, rl.Cur)}
	}
	return &forkLimitError{err: err, cause: "the system's task limit (kernel.threads-max, kernel.pid_max) or memory may be exhausted"}
}
