//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// fileFreeze is the cgroup v2 freezer's control file (Linux 5.2).
const fileFreeze = "cgroup.freeze"

// The wait for "frozen 1" wakes on cgroup.events' notification, but the
// kernel sends at most one notification per file every 10 ms
// (CGROUP_FILE_NOTIFY_MIN_INTV) and delays the others, so a freeze soon
// after a thaw would wait that long. The wait therefore also reads the file
// again after a short back-off: a freeze takes tens of microseconds.
const (
	freezePollFirst = 50 * time.Microsecond
	freezePollMax   = time.Millisecond
)

// Freeze asks the kernel to freeze every process of the group and of the
// groups below it (writing "1" to cgroup.freeze) and waits until
// cgroup.events says "frozen 1": each process is then stopped where it
// cannot run user code, much as with SIGSTOP, but without a signal its
// parent or the process itself could see, and atomically with respect to
// forks in flight.
//
// alreadyFrozen reports that cgroup.freeze already read "1": someone else
// froze the group, and the caller must not Thaw it. Otherwise the caller
// thaws it when done, also when Freeze failed: when ctx ends before the
// group is seen frozen (or had ended before the call), the error wraps
// ctx.Err() and the freeze stays asked for. A group frozen by an ancestor's freeze counts as frozen.
func (g *Group) Freeze(ctx context.Context) (alreadyFrozen bool, err error) {
	// Opened before the write, so that no notification can be missed.
	fd, err := unix.Open(filepath.Join(g.Dir, fileEvents), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("freeze cgroup: %w", err)
	}
	defer unix.Close(fd)
	data, err := os.ReadFile(filepath.Join(g.Dir, fileFreeze))
	if err != nil {
		return false, fmt.Errorf("freeze cgroup: %w (kernel < 5.2 has no cgroup freezer)", err)
	}
	if alreadyFrozen, err = parseFreeze(data); err != nil {
		return false, fmt.Errorf("freeze cgroup %s: %w", g.Dir, err)
	}
	if !alreadyFrozen {
		if err := g.writeFreeze("1"); err != nil {
			return false, fmt.Errorf("freeze cgroup: %w", err)
		}
	}
	return alreadyFrozen, g.waitFrozen(ctx, fd)
}

// Thaw writes "0" to cgroup.freeze: the group's processes run again,
// unless an ancestor of the group is frozen too. Call it only for a group
// whose Freeze said alreadyFrozen == false.
func (g *Group) Thaw() error {
	if err := g.writeFreeze("0"); err != nil {
		return fmt.Errorf("thaw cgroup: %w", err)
	}
	return nil
}

// writeFreeze writes v to the group's cgroup.freeze.
func (g *Group) writeFreeze(v string) error {
	f, err := os.OpenFile(filepath.Join(g.Dir, fileFreeze), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", v, f.Name(), err)
	}
	return nil
}

// waitFrozen returns once cgroup.events, open as fd, says "frozen 1", or
// an error wrapping ctx.Err() when ctx ends first. It waits on the file's
// notification (POLLPRI) at most the back-off at a time, doubled each
// round up to freezePollMax, so that ctx is noticed within that too.
func (g *Group) waitFrozen(ctx context.Context, fd int) error {
	buf := make([]byte, 256)
	for wait := freezePollFirst; ; wait = min(2*wait, freezePollMax) {
		// ctx first: a caller whose ctx has ended learns it whether or
		// not the kernel was quick.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("freeze cgroup %s: not seen frozen: %w", g.Dir, err)
		}
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("freeze cgroup: read %s: %w", fileEvents, err)
		}
		frozen, err := parseFrozen(buf[:n])
		if err != nil {
			return fmt.Errorf("freeze cgroup %s: %w", g.Dir, err)
		}
		if frozen {
			return nil
		}
		ts := unix.NsecToTimespec(int64(wait))
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		if _, err := unix.Ppoll(fds, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("freeze cgroup: poll %s: %w", fileEvents, err)
		}
	}
}
