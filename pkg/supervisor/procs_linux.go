package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// osProcs is procs on Linux: children forked by the spawner's locked
// thread, signalled with kill(2), reaped with wait4(2) on SIGCHLD.
type osProcs struct {
	stdin   *os.File // /dev/null, every child's stdin
	spawner *spawner
}

func (p *osProcs) run(exited func()) (stop func()) {
	stopWatch := make(chan struct{})
	watching := watchSIGCHLD(exited, stopWatch)
	p.spawner = startSpawner(p.stdin)
	return func() {
		close(stopWatch)
		<-watching
		p.spawner.stop()
	}
}

func (p *osProcs) start(spec spawnSpec) (int, error) {
	return p.spawner.spawn(spec)
}

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
		report(exitStatus{pid: pid, status: ws, at: time.Now()})
	}
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
