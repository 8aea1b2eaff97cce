package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// exitStatus is how a process ended.
type exitStatus struct {
	pid    int
	status unix.WaitStatus
	at     time.Time
}

// sigchld tells the event loop that some process of ours may have ended.
type sigchld struct{}

// reap reaps every process that has ended, those the supervisor started
// and any orphan the kernel re-parented to the master (as PID 1 of a
// container, or as a subreaper), and reports each. The event loop alone
// calls it, so a pid in the children table is never one the kernel has
// freed: between a wait4 and the table update there is no window in which
// the loop could signal a recycled pid, and no exec.Cmd.Wait races it.
func reap(report func(exitStatus)) {
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
