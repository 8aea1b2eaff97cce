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

// reap is the master's only caller of wait4. It reaps every child that has
// ended, those the supervisor started and any orphan the kernel re-parented
// to the master (as PID 1 of a container, or as a subreaper), and reports
// each through report. One owner of wait4 means no exec.Cmd.Wait can race it
// and lose an exit status.
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

// reaper calls reap on every SIGCHLD until stop is closed. It subscribes
// before returning, so no SIGCHLD of a child started afterwards is missed.
func reaper(report func(exitStatus), stop <-chan struct{}) (done <-chan struct{}) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer signal.Stop(sigs)
		reap(report) // anything that ended before we subscribed
		for {
			select {
			case <-sigs:
				reap(report)
			case <-stop:
				return
			}
		}
	}()
	return finished
}
