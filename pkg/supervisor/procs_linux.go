package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prefork/prefork/pkg/cgroup"
	"golang.org/x/sys/unix"
)

// osProcs is procs on Linux: children forked by the spawner's locked
// thread, each into a cgroup of its own where the master can make one,
// signalled with kill(2), reaped with wait4(2) on SIGCHLD.
type osProcs struct {
	stdin   *os.File // /dev/null, every child's stdin
	log     *slog.Logger
	spawner *spawner
	// guard is the reuseport guard inherited from the master this one
	// replaced (adoptGuard), which the spawner takes over; nil: it
	// installs its own.
	guard *adoptedGuard
	// cgroups is where the children's cgroups go; nil when the master
	// cannot make any (it kills leftovers by process group alone).
	cgroups *cgroup.Parent
	// output copies the children's lines under --child-output prefix.
	output *outputs

	// token makes this run's cgroup names its own: a master that is PID
	// 1 of a container has the pid of its predecessor.
	token string

	mu      sync.Mutex
	limits  map[string]bool       // the fork limits said, by cause
	groups  map[int]*cgroup.Group // by child pid, until released
	made    int                   // cgroups made, for their names
	removal sync.WaitGroup        // cgroups being removed

	// adopted is what an old master's procs handed on (an upgrade in
	// place); nil for a master that started afresh.
	adopted *procsFile
	// helpers are the master's own processes (an upgrade's check), whose
	// exits go to their waiters rather than to the loop.
	helperMu sync.Mutex
	helpers  map[int]chan<- unix.WaitStatus
}

func (p *osProcs) run(exited func()) (stop func()) {
	// Orphans of a child (the workers of a server killed with -9, a
	// double-forked daemon) come to the master, which reaps them at
	// once, instead of to init, which may take seconds.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		p.log.Warn("cannot become the children's subreaper; their orphans go to init", "err", err)
	}
	var err error
	if p.cgroups, err = cgroup.Own(); err != nil {
		p.log.Warn("children share the master's cgroup; what a child leaves behind is killed by process group only (a daemon that left it survives)",
			"reason", err.Error())
	} else {
		p.log.Info("each child runs in a cgroup of its own", "under", p.cgroups.Dir)
		p.token = strconv.FormatInt(time.Now().UnixNano(), 36)
		if p.adopted != nil && p.adopted.CgroupToken != "" {
			p.token, p.made = p.adopted.CgroupToken, p.adopted.CgroupsMade
		}
		p.sweepGroups(staleGroupAge)
	}
	p.groups = make(map[int]*cgroup.Group)
	if p.adopted != nil {
		for pid, dir := range p.adopted.Cgroups {
			p.groups[pid] = &cgroup.Group{Dir: dir}
		}
	}
	p.output = newOutputs()
	if p.adopted != nil {
		if err := p.output.adopt(p.adopted.Outputs); err != nil {
			p.log.Warn("the children's output pipes could not all be taken over; their lines are lost", "err", err)
		}
	}
	stopWatch := make(chan struct{})
	watching := watchSIGCHLD(exited, stopWatch)
	nproc := readNprocLimit()
	p.reserveThreads(nproc)
	p.spawner = startSpawner(p.stdin, nproc, p.guard, p.log)
	p.guard = nil // the spawner's now
	switch {
	case p.spawner.guardErr != nil:
		p.log.Warn("children can replace the steering program of their listeners' group (SO_ATTACH_REUSEPORT_*): the seccomp filter that forbids it could not be installed",
			"err", p.spawner.guardErr.Error())
	case p.spawner.nnp:
		p.log.Info("children run with no_new_privs: a master without CAP_SYS_ADMIN sets it to forbid them SO_ATTACH_REUSEPORT_* (setuid and setcap programs gain no privilege in them)")
	}
	if _, why := p.spawner.guardListener(); why != "" {
		p.log.Info("the seccomp filter refuses the children's SO_ATTACH_REUSEPORT_* itself, and would refuse the master's own after an upgrade in place: the master cannot upgrade in place",
			"reason", why)
	}
	return func() {
		close(stopWatch)
		<-watching
		p.spawner.stop()
		p.output.finish(outputFlushTimeout)
		p.removal.Wait()
	}
}

// staleGroup matches the name of a child's cgroup: prefork-MASTERPID-
// TOKEN-N (earlier masters: prefork-MASTERPID-N).
var staleGroup = regexp.MustCompile(`^prefork-([0-9]+)-(?:([0-9a-z]+)-)?[0-9]+$`)

// sweepGroups removes, in the background, the children's cgroups that a
// master killed before it could remove them left behind: those of a
// master pid not running here, and those of an earlier run with our pid.
// It removes only empty ones, minAge old or more: a master in another
// pid namespace (a container sharing this cgroup) looks gone from here,
// and its children, or a group it has just made for one, are not ours.
func (p *osProcs) sweepGroups(minAge time.Duration) {
	entries, err := os.ReadDir(p.cgroups.Dir)
	if err != nil {
		return
	}
	self := os.Getpid()
	swept := 0
	for _, e := range entries {
		m := staleGroup.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == self && m[2] == p.token || pid != self && unix.Kill(pid, 0) != unix.ESRCH {
			continue // ours, or its master runs
		}
		g := &cgroup.Group{Dir: filepath.Join(p.cgroups.Dir, e.Name())}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < minAge {
			continue
		}
		if busy, err := g.Populated(); err != nil || busy {
			continue
		}
		p.removeGroup(g)
		swept++
	}
	if swept > 0 {
		p.log.Info("removing empty cgroups left by children of masters that are gone", "count", swept)
	}
}

// staleGroupAge is how old a cgroup left by another master must be before
// sweepGroups takes it.
const staleGroupAge = time.Minute

func (p *osProcs) start(spec spawnSpec) (int, error) {
	place := spawnPlace{cgroupFD: -1}
	g := p.newGroup()
	if g != nil {
		fd, err := g.Open()
		if err != nil {
			p.removeGroup(g)
			return 0, err
		}
		defer unix.Close(fd)
		place.cgroupFD = fd
	}
	var lines *childLines
	if spec.prefix {
		var err error
		if lines, err = p.output.open(); err != nil {
			p.removeGroup(g)
			return 0, fmt.Errorf("child output: %w", err)
		}
		place.stdout, place.stderr = lines.stdout, lines.stderr
	}
	pid, err := p.spawner.spawn(spec, place)
	if g != nil && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)) {
		// clone3, which forking into a cgroup needs, may be refused
		// (a seccomp profile): start the child where the master is.
		place.cgroupFD = -1
		if pid, err = p.spawner.spawn(spec, place); err == nil {
			p.log.Warn("could not start a child in its own cgroup; children start in the master's from now on", "slot", spec.slot)
			p.mu.Lock()
			p.cgroups = nil
			p.mu.Unlock()
			p.removeGroup(g)
			g = nil
		}
	}
	if lines != nil {
		lines.started(spec.slot, pid)
	}
	if err != nil {
		p.removeGroup(g)
		p.sayLimit(err)
		return 0, err
	}
	if g != nil {
		p.mu.Lock()
		p.groups[pid] = g
		p.mu.Unlock()
	}
	return pid, nil
}

// reserveThreads makes the OS threads the master will need while the
// process limits leave room for them (see nproc_linux.go).
func (p *osProcs) reserveThreads(nproc *nprocLimit) {
	room := -1
	if nproc != nil {
		room = int(nproc.soft) - uidTasks(nproc.uid)
	}
	for _, l := range pidsLimits() {
		room = minRoom(room, l.max-l.current)
	}
	n := threadReserve(runtime.GOMAXPROCS(0), room)
	reserveThreads(n)
	if nproc != nil {
		p.log.Info("the process limit applies to the master and its children: children get a lower one, and the master keeps threads in reserve",
			"uid", nproc.uid, "rlimit_nproc", nproc.soft, "children_rlimit_nproc", nproc.child, "threads_reserved", n)
	}
}

// minRoom is min for room counts where -1 is unknown.
func minRoom(a, b int) int {
	if a < 0 {
		return max(b, 0)
	}
	return max(min(a, b), 0)
}

// sayLimit says, once per limit, that children cannot be forked because
// a process limit is reached; each failure is still a failed start of its
// slot, with the limit in its error.
func (p *osProcs) sayLimit(err error) {
	var le *forkLimitError
	if !errors.As(err, &le) {
		return
	}
	p.mu.Lock()
	said := p.limits[le.cause]
	if p.limits == nil {
		p.limits = map[string]bool{}
	}
	p.limits[le.cause] = true
	p.mu.Unlock()
	if !said {
		p.log.Warn("children cannot be forked: a process limit is reached; each failed fork is a failed start of its slot (restarted with backoff), and the master runs on",
			"limit", le.cause)
	}
}

// newGroup makes the cgroup of the next child, or returns nil to start it
// in the master's own.
func (p *osProcs) newGroup() *cgroup.Group {
	p.mu.Lock()
	parent := p.cgroups
	p.made++
	n := p.made
	p.mu.Unlock()
	if parent == nil {
		return nil
	}
	g, err := parent.New(fmt.Sprintf("prefork-%d-%s-%d", os.Getpid(), p.token, n))
	if err != nil {
		p.log.Warn("child starts in the master's cgroup", "err", err)
		return nil
	}
	return g
}

// removeGroup kills what is in g, waits for it to empty and removes it,
// in the background: a process stuck in the kernel must not hold up the
// loop. Run waits for every removal before it returns.
func (p *osProcs) removeGroup(g *cgroup.Group) {
	if g == nil {
		return
	}
	p.removal.Add(1)
	go func() {
		defer p.removal.Done()
		ctx, cancel := context.WithTimeout(context.Background(), cgroupRemoveTimeout)
		defer cancel()
		if err := g.Remove(ctx); err != nil {
			p.log.Warn("could not remove a child's cgroup", "err", err)
		}
	}()
}

// cgroupRemoveTimeout bounds the wait for a killed cgroup to empty.
const cgroupRemoveTimeout = 10 * time.Second

// signal sends sig to pid, or to its process group. A child that left
// the group it leads (setsid, setpgid) is signalled alone.
func (p *osProcs) signal(pid int, sig unix.Signal, group bool) error {
	target := pid
	if group {
		target = -pid
	}
	err := unix.Kill(target, sig)
	if errors.Is(err, unix.ESRCH) && group {
		err = unix.Kill(pid, sig)
	}
	return err
}

// reap reaps every process that has ended, those the supervisor started
// and any orphan the kernel re-parented to the master (as PID 1 of a
// container, or as a subreaper), and reports each. No exec.Cmd.Wait races
// it.
func (p *osProcs) reap(report func(exitStatus)) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has ended yet
		}
		if p.helperExited(pid, ws) {
			continue
		}
		report(exitStatus{pid: pid, status: ws, at: time.Now()})
	}
}

// cgroupDir returns the cgroup of the child pid, or "" when it has none.
func (p *osProcs) cgroupDir(pid int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.groups[pid]; g != nil {
		return g.Dir
	}
	return ""
}

func (p *osProcs) cpu(pid int) (time.Duration, bool) {
	p.mu.Lock()
	g := p.groups[pid]
	p.mu.Unlock()
	if g == nil {
		return 0, false
	}
	d, err := g.CPU()
	return d, err == nil
}

// release kills what is left of the reaped child pid: its cgroup, and the
// process group it led, where a forking server's workers stay when it
// dies. While the group has members its number stays theirs; once it has
// none, kill finds no group, unless in the microseconds since the reap
// the pids wrapped around and a new process took the number and led a
// group of its own: the cgroup, where there is one, has no such window.
func (p *osProcs) release(pid int) {
	unix.Kill(-pid, unix.SIGKILL) // ESRCH: nothing was left
	p.mu.Lock()
	g := p.groups[pid]
	delete(p.groups, pid)
	p.mu.Unlock()
	p.removeGroup(g)
}

func (p *osProcs) parent(pid int) (int, error) { return parentPID(pid) }
func (p *osProcs) rss(pid int) (uint64, error) { return residentBytes(pid) }

// watchSIGCHLD calls tick on every SIGCHLD until stop is closed. It
// subscribes before returning, so no SIGCHLD of a child started afterwards
// is missed; signals that arrive together are coalesced, which is fine as
// reap takes everything that has ended.
func watchSIGCHLD(tick func(), stop <-chan struct{}) (done <-chan struct{}) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer signal.Stop(sigs)
		for {
			select {
			case <-sigs:
				tick()
			case <-stop:
				return
			}
		}
	}()
	return finished
}
