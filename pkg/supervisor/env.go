package supervisor

import (
	"time"

	"golang.org/x/sys/unix"
)

// The seam between the event loop and the operating system, after
// cloudflare/tableflip's env.go: the loop starts, signals and reaps
// processes through procs, and arms timers through clock. Run uses the
// real ones (osProcs, wallClock); the loop's tests swap in fake processes
// and a clock they advance by hand, and drive every scenario in-process.
// What only a kernel can show (sockets, signals, namespaces) is tested end
// to end with the built binaries.

// procs starts, signals and reaps the children.
type procs interface {
	// run prepares what starting and reaping need, and calls exited
	// whenever a process may have ended (SIGCHLD); the loop then calls
	// reap. The returned function undoes it, once no child is left.
	run(exited func()) (stop func())
	// start starts a process and returns its pid. The caller owns reaping.
	start(spec spawnSpec) (int, error)
	// signal sends sig to pid, or to the process group pid leads.
	signal(pid int, sig unix.Signal, group bool) error
	// reap reports every process that has ended since the last call. Only
	// the loop calls it, so a pid in the children table is never one the
	// kernel has freed.
	reap(report func(exitStatus))
	// parent returns the parent of pid.
	parent(pid int) (int, error)
	// rss returns the resident memory of pid, in bytes.
	rss(pid int) (uint64, error)
}

// spawnSpec is one process to start.
type spawnSpec struct {
	path  string
	argv  []string
	env   []string
	extra []int     // descriptors to pass as fd 3, 4, ...
	id    *identity // who the child runs as; nil: the master's identity
}

// exitStatus is how a process ended.
type exitStatus struct {
	pid    int
	status unix.WaitStatus
	at     time.Time
}

// clock tells the time and arms timers.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, as time.AfterFunc.
	AfterFunc(d time.Duration, f func()) timer
	// NewTicker ticks every d, as time.NewTicker.
	NewTicker(d time.Duration) ticker
}

// timer is a *time.Timer, or a fake.
type timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// ticker is a *time.Ticker, or a fake.
type ticker interface {
	C() <-chan time.Time
	Stop()
}

// wallClock is the clock of the machine.
type wallClock struct{}

func (wallClock) Now() time.Time                            { return time.Now() }
func (wallClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }
func (wallClock) NewTicker(d time.Duration) ticker          { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (w wallTicker) C() <-chan time.Time { return w.t.C }
func (w wallTicker) Stop()               { w.t.Stop() }

// toggleTicker starts or stops *t, a ticker every d, and returns its
// channel: nil while stopped, so that a select on it waits for nothing.
func toggleTicker(clk clock, t *ticker, d time.Duration, on bool) <-chan time.Time {
	switch {
	case on && *t == nil:
		*t = clk.NewTicker(d)
	case !on && *t != nil:
		(*t).Stop()
		*t = nil
	}
	if *t == nil {
		return nil
	}
	return (*t).C()
}

// stopTimer stops t, if any: a nil timer is one never armed.
func stopTimer(t timer) {
	if t != nil {
		t.Stop()
	}
}

// env is everything of the outside world the loop uses: the seam above,
// plus the service manager that started the master, if any.
type env struct {
	procs procs
	clock clock
	// steerSupported reports whether the steering program loads here.
	steerSupported func() error
	// notifySystemd sends a state to the service manager that started
	// the master (NOTIFY_SOCKET); nil when there is none.
	notifySystemd func(state string) error
	// watchdog is the master's own watchdog period (WatchdogSec=), or 0.
	watchdog time.Duration
	// shim is the program that starts a child of master socket mode
	// (execShimPath).
	shim string
}
