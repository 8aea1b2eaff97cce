//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the core interface files of a cgroup v2 (Documentation/
// admin-guide/cgroup-v2.rst).
const (
	fileProcs  = "cgroup.procs"
	fileEvents = "cgroup.events"
	fileKill   = "cgroup.kill"
	fileType   = "cgroup.type"
	// cpu.stat is kept for every group, cpu controller or not.
	fileCPUStat = "cpu.stat"
)

// pollSlice bounds one wait for a change of cgroup.events, so that a
// context canceled without a deadline is noticed within it, and so that a
// missed notification costs at most this much. A variable for a test that
// shows the notification arrives.
var pollSlice = 100 * time.Millisecond

// probes numbers the probe directories of Own, so that concurrent calls
// (tests in parallel) do not collide.
var probes atomic.Uint64

// Own finds the master's own cgroup and checks that it can make cgroups in
// it (mkdir and rmdir of a probe directory, which must have a writable
// cgroup.kill). The error says why not, in one operator-readable phrase:
// no cgroup v2 mounted; cgroup.kill unsupported (kernel < 5.14); not
// writable: permission denied — run as root or with systemd Delegate=yes;
// read-only; threaded. The master then falls back to process-group kills
// and logs the reason once.
func Own() (*Parent, error) {
	dir, err := ownDir()
	if err != nil {
		return nil, fmt.Errorf("child cgroups: %w", err)
	}
	if err := probe(dir); err != nil {
		return nil, fmt.Errorf("child cgroups in %s: %w", dir, err)
	}
	return &Parent{Dir: dir}, nil
}

// ownDir reads where this process's cgroup v2 is.
func ownDir() (string, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	ms, err := parseMountinfo(mi)
	if err != nil {
		return "", err
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	p, err := parseProcCgroup(cg)
	if err != nil {
		return "", err
	}
	return resolve(ms, p)
}

// probe makes and removes a group in dir, and checks in it what New,
// Open and Kill will need. It looks at a new group rather than at dir,
// because dir may be the root cgroup, which has no cgroup.kill.
func probe(dir string) error {
	p := filepath.Join(dir, fmt.Sprintf("prefork-probe-%d-%d", os.Getpid(), probes.Add(1)))
	if err := unix.Mkdir(p, 0o755); err != nil {
		return explainMkdir(err)
	}
	defer unix.Rmdir(p)
	if _, err := os.Stat(filepath.Join(p, fileKill)); errors.Is(err, fs.ErrNotExist) {
		return errors.New("cgroup.kill unsupported (kernel < 5.14)")
	}
	// access(2) answers for the real uid, which is the master's: a
	// delegated service running as a user gets its files chowned to it.
	for _, f := range []string{filepath.Join(p, fileKill), filepath.Join(p, fileProcs), filepath.Join(dir, fileProcs)} {
		if err := unix.Access(f, unix.W_OK); err != nil {
			return fmt.Errorf("%s not writable: %w — run as root or with systemd Delegate=yes", f, err)
		}
	}
	// Below a threaded cgroup new groups are threaded too, and a process
	// cannot be put in a threaded group, only threads.
	t, err := os.ReadFile(filepath.Join(p, fileType))
	if err != nil {
		return fmt.Errorf("read probe type: %w", err)
	}
	if typ := strings.TrimSpace(string(t)); typ != "domain" {
		return fmt.Errorf("threaded: new cgroups are %q, not domain", typ)
	}
	return nil
}

// explainMkdir turns a failed mkdir of the probe into the phrase an
// operator needs.
func explainMkdir(err error) error {
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("not writable: %w — run as root or with systemd Delegate=yes", err)
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("read-only: %w (a container's cgroup2 mount; give it a writable one)", err)
	case errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("too many cgroups (cgroup.max.descendants or cgroup.max.depth): %w", err)
	}
	return fmt.Errorf("mkdir probe: %w", err)
}

// New makes a child cgroup named name (e.g. "prefork-<masterpid>-<n>"); a
// stale one of the same name left by a crashed earlier master is killed and
// removed first, waiting at most StaleTimeout for it to empty.
func (p *Parent) New(name string) (*Group, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("new cgroup: %w", err)
	}
	g := &Group{Dir: filepath.Join(p.Dir, name)}
	err := os.Mkdir(g.Dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		ctx, cancel := context.WithTimeout(context.Background(), StaleTimeout)
		defer cancel()
		if err := g.Remove(ctx); err != nil {
			return nil, fmt.Errorf("new cgroup %s: stale one: %w", name, err)
		}
		err = os.Mkdir(g.Dir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("new cgroup: %w", err)
	}
	return g, nil
}

// Open returns a directory fd of the group (O_RDONLY|O_DIRECTORY|O_CLOEXEC)
// for syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}: the child is
// forked straight into the group (clone3 CLONE_INTO_CGROUP), so nothing it
// forks can escape before it is placed. Caller closes it (unix.Close), once
// the child is started; one fd may serve several spawns.
func (g *Group) Open() (int, error) {
	fd, err := unix.Open(g.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open cgroup %s: %w", g.Dir, err)
	}
	return fd, nil
}

// Procs lists the pids in the group and in groups below it (a child may
// make some), from their cgroup.procs files: the group's own first, in the
// kernel's order. A process that has exited is not listed even while it is
// a zombie.
func (g *Group) Procs() ([]int, error) {
	pids, err := procsTree(g.Dir, true)
	if err != nil {
		return nil, fmt.Errorf("cgroup procs: %w", err)
	}
	return pids, nil
}

// procsTree reads cgroup.procs of dir and of the groups below it. A group
// below may vanish while it is read; top says that dir itself must not.
func procsTree(dir string, top bool) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, fileProcs))
	if err != nil {
		if !top && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	pids, err := parsePids(data)
	if err != nil {
		return nil, err
	}
	subs, err := subgroups(dir)
	if err != nil && (top || !errors.Is(err, fs.ErrNotExist)) {
		return nil, err
	}
	for _, sub := range subs {
		more, err := procsTree(sub, false)
		if err != nil {
			return nil, err
		}
		pids = append(pids, more...)
	}
	return pids, nil
}

// subgroups lists the groups directly below dir: its subdirectories.
func subgroups(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var subs []string
	for _, e := range ents {
		if e.IsDir() {
			subs = append(subs, filepath.Join(dir, e.Name()))
		}
	}
	return subs, nil
}

// Populated reports cgroup.events' "populated": whether a live process is
// in the group or below it. A process counts until it exits, not until it
// is reaped.
func (g *Group) Populated() (bool, error) {
	data, err := os.ReadFile(filepath.Join(g.Dir, fileEvents))
	if err != nil {
		return false, fmt.Errorf("cgroup populated: %w", err)
	}
	return parseEvents(data)
}

// CPU returns the CPU time the group's processes have used, from the
// usage_usec line of cpu.stat, which cgroup v2 keeps for every group
// whether or not the cpu controller is enabled.
func (g *Group) CPU() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(g.Dir, fileCPUStat))
	if err != nil {
		return 0, fmt.Errorf("cgroup cpu: %w", err)
	}
	return parseCPUStat(data)
}

// Kill writes "1" to cgroup.kill: SIGKILL to every process in the group and
// below it, atomically, even double-forked daemons, and a process forked
// during the kill. It returns before they are dead; Remove waits for that.
func (g *Group) Kill() error {
	f, err := os.OpenFile(filepath.Join(g.Dir, fileKill), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("kill cgroup: %w", err)
	}
	_, err = f.Write([]byte("1"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kill cgroup %s: %w", g.Dir, err)
	}
	return nil
}

// Remove kills what is left in the group, waits until the group is empty
// (woken by cgroup.events' notifications, bounded by ctx), and removes its
// directory and the groups a child made below it. When ctx ends first, the
// error says what is still in it (pids, names and states), and wraps
// ctx.Err(). Removing a group that is already gone succeeds.
//
// When Remove returns nil, every process of the group has exited; one may
// still show in /proc for a moment, then as a zombie until its parent (or,
// for an orphan, init) reaps it.
func (g *Group) Remove(ctx context.Context) error {
	return g.remove(ctx, g.Kill)
}

// remove is Remove with the kill as a parameter, so that a test can leave
// a process in the group and see what Remove reports.
func (g *Group) remove(ctx context.Context, kill func() error) error {
	for {
		if err := kill(); err != nil {
			if _, serr := os.Stat(g.Dir); errors.Is(serr, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("remove cgroup: %w", err)
		}
		if err := g.waitEmpty(ctx); err != nil {
			return err
		}
		err := removeTree(g.Dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("remove cgroup: %w", err)
		}
		// Someone spawned into the group between the wait and the rmdir
		// (the group's fd is still open somewhere): kill again, after a
		// pause so that a tight race does not make this spin.
		select {
		case <-ctx.Done():
			return g.stillThere(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitEmpty returns when the group holds no live process, or an error
// naming what is still in it when ctx ends. The kernel notifies a change
// of cgroup.events to poll(2) as POLLPRI once the file was read.
func (g *Group) waitEmpty(ctx context.Context) error {
	fd, err := unix.Open(filepath.Join(g.Dir, fileEvents), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove cgroup: wait: %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 256)
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("remove cgroup: read %s: %w", fileEvents, err)
		}
		pop, err := parseEvents(buf[:n])
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", g.Dir, err)
		}
		if !pop {
			return nil
		}
		if ctx.Err() != nil {
			return g.stillThere(ctx.Err())
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, pollTimeout(ctx)); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("remove cgroup: poll %s: %w", fileEvents, err)
		}
	}
}

// pollTimeout is the next wait in milliseconds: a slice, or less when
// ctx's deadline is nearer; at least 1, as 0 would not wait at all.
func pollTimeout(ctx context.Context) int {
	d := pollSlice
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return max(1, int((d+time.Millisecond-1)/time.Millisecond))
}

// stillThere is the error of a Remove that ran out of time: what is in the
// group, with each process's name and state (state D, uninterruptible
// sleep, is the usual reason SIGKILL has not ended it yet).
func (g *Group) stillThere(cause error) error {
	pids, err := procsTree(g.Dir, true)
	var what string
	switch {
	case err != nil:
		what = "(cannot list: " + err.Error() + ")"
	case len(pids) == 0:
		what = "no process listed, but populated"
	default:
		what = describe(pids)
	}
	return fmt.Errorf("remove cgroup %s: still in it: %s: %w", g.Dir, what, cause)
}

// describe names up to 8 processes as "PID (COMM, STATE)".
func describe(pids []int) string {
	const most = 8
	var parts []string
	for i, pid := range pids {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(pids)-most))
			break
		}
		proc := "/proc/" + strconv.Itoa(pid)
		comm, _ := os.ReadFile(proc + "/comm")
		status, _ := os.ReadFile(proc + "/status")
		parts = append(parts, fmt.Sprintf("pid %d (%s, %s)", pid, strings.TrimSpace(string(comm)), parseState(status)))
	}
	return strings.Join(parts, ", ")
}

// removeTree removes dir and the groups below it, deepest first, as the
// kernel refuses to remove a group that has groups below it.
func removeTree(dir string) error {
	subs, err := subgroups(dir)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if err := removeTree(sub); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := unix.Rmdir(dir); err != nil {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}
