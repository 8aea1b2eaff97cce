//go:build linux

package freeze

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The wait for a process to stop polls /proc with this back-off: a busy
// process stops within tens of microseconds of SIGSTOP, and the cap keeps
// a canceled ctx noticed within a millisecond. It sleeps with nanosleep,
// as Go's timers wake about a millisecond late here.
const (
	pollFirst = 50 * time.Microsecond
	pollMax   = time.Millisecond
)

// errGone is why a process is skipped: it has exited, or was reaped.
var errGone = errors.New("process gone")

// Freeze stops every target; it returns once all are stopped or ctx ends.
// It always returns a *Frozen (never nil, even with an error) that the
// caller must Thaw. It sends every SIGSTOP first, so that those processes
// stop while it freezes the groups one after another (each Group.Freeze
// waits for its group), then waits for the processes.
//
// A target that is gone (its group removed, its processes exited) is
// skipped without an error. The error joins one per target that was not
// seen stopped, ctx's error wrapped in those that ctx cut short; Complete
// then reports false.
func Freeze(ctx context.Context, targets []Target) (*Frozen, error) {
	f := &Frozen{}
	var errs []error
	var waits []int
	for _, t := range targets {
		if t.Cgroup != nil {
			continue
		}
		for _, pid := range t.Pids {
			wait, err := f.stop(pid)
			if err != nil {
				errs = append(errs, err)
			}
			if wait {
				waits = append(waits, pid)
			}
		}
	}
	for _, t := range targets {
		if t.Cgroup == nil {
			continue
		}
		already, err := t.Cgroup.Freeze(ctx)
		if !already {
			// Also on error: the freeze may stay asked for. Thaw
			// skips a group that is gone by then.
			f.groups = append(f.groups, t.Cgroup)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, pid := range waits {
		if err := waitStill(ctx, pid); err != nil {
			errs = append(errs, err)
		}
	}
	f.complete = len(errs) == 0
	return f, errors.Join(errs...)
}

// stop sends SIGSTOP to pid unless it is stopped already (by an operator,
// a test, a debugger: then it is left for whoever stopped it to resume,
// and only waited for) or has exited. wait says whether to wait for it.
func (f *Frozen) stop(pid int) (wait bool, err error) {
	states, err := threadStates(pid)
	if errors.Is(err, errGone) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("freeze pid %d: %w", pid, err)
	}
	live := false
	for _, s := range states {
		if stopped(s) {
			// A group stop is done or under way: not ours.
			return true, nil
		}
		live = live || !exited(s)
	}
	if !live {
		return false, nil
	}
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("freeze pid %d: SIGSTOP: %w", pid, err)
	}
	f.stopped = append(f.stopped, pid)
	return true, nil
}

// waitStill returns once every thread of pid is still (see still), pid is
// gone, or ctx ends: then the error says which threads still ran, and wraps
// ctx.Err(). It reads /proc/PID/task/*/stat, never waitid: waitid(WSTOPPED)
// does not report a stop that an earlier wait already collected, and works
// only for the caller's own children.
func waitStill(ctx context.Context, pid int) error {
	for wait := pollFirst; ; wait = min(2*wait, pollMax) {
		// ctx first, as in cgroup.Group.Freeze: a caller whose ctx has
		// ended learns it whether or not the process was quick.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("freeze pid %d: not seen stopped (%s): %w", pid, running(pid), err)
		}
		states, err := threadStates(pid)
		if errors.Is(err, errGone) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("freeze pid %d: wait for the stop: %w", pid, err)
		}
		if allStill(states) {
			return nil
		}
		ts := unix.NsecToTimespec(int64(wait))
		unix.Nanosleep(&ts, nil) // EINTR: only a shorter sleep
	}
}

// allStill reports whether every thread is still.
func allStill(states map[int]byte) bool {
	for _, s := range states {
		if !still(s) {
			return false
		}
	}
	return true
}

// running describes the threads of pid that are not still now, for an
// error.
func running(pid int) string {
	states, err := threadStates(pid)
	if err != nil {
		return "now: " + err.Error()
	}
	var n int
	var some []string
	for tid, s := range states {
		if !still(s) {
			n++
			if len(some) < 4 {
				some = append(some, fmt.Sprintf("%d %c", tid, s))
			}
		}
	}
	return fmt.Sprintf("now %d of %d threads running, tid and state: %v", n, len(states), some)
}

// threadStates reads the state of each thread of pid, by thread id, from
// /proc/PID/task/TID/stat; errGone when pid has no /proc entry. A thread
// that exits while they are read is left out.
//
// Each read is short and bounded: /proc/PID/stat takes no lock the process
// can hold for long (fs/proc/array.c, do_task_stat: RCU and the signal
// lock, no mmap or exec lock, which a hostile process can keep busy), so a
// caller's ctx, checked between reads, bounds the wait.
func threadStates(pid int) (map[int]byte, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, errGone
		}
		return nil, err
	}
	states := make(map[int]byte, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/" + e.Name() + "/stat")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s, err := parseState(b)
		if err != nil {
			return nil, err
		}
		states[tid] = s
	}
	if len(states) == 0 {
		return nil, errGone
	}
	return states, nil
}

// Thaw undoes exactly what Freeze did: it thaws the groups Freeze froze
// and sends SIGCONT to the processes Freeze stopped, and to no other.
// A group or process gone since is skipped. A second call does nothing.
// The error joins one per target that could not be resumed; the others
// are resumed all the same.
func (f *Frozen) Thaw() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed {
		return nil
	}
	f.thawed = true
	var errs []error
	for _, g := range f.groups {
		if err := g.Thaw(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, pid := range f.stopped {
		if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resume pid %d: %w", pid, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("thaw: %w", err)
	}
	return nil
}
