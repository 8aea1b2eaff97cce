package supervisor

import (
	"context"
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
	// cpu returns the CPU time the child pid and everything it started
	// have used (its cgroup's); false when that is not known.
	cpu(pid int) (time.Duration, bool)
	// release kills what is left of a child the loop has reaped: the
	// rest of its process group and of its cgroup (a forking server's
	// workers, a daemon it double-forked).
	release(pid int)
}

// observer tells what the kernel shows of a child's processes. Both calls
// read /proc and netlink, which a hostile child can make slow: the loop
// makes them from goroutines of their own, never inline.
type observer interface {
	// waiting blocks until a process of the child w.pid waits for
	// connections as w says, and returns nil; ctx's error once ctx
	// ends; another when the kernel cannot be read for it.
	waiting(ctx context.Context, w waitSpec) error
	// addressInUse probes addr as a child binding it with SO_REUSEPORT
	// would: blocked when the bind fails because a socket on it does not
	// share, with the pids holding the address's listeners.
	addressInUse(l Listener) (holders []int, blocked bool)
	// freeze stops the processes of the children pids (each one's
	// cgroup, or its process tree) until the returned thaw, which undoes
	// exactly what it did and must be called once. It returns when all
	// are stopped (whole) or ctx ends (an error saying which did not
	// stop); a process stopped before stays stopped after thaw.
	freeze(ctx context.Context, pids []int) (thaw func() error, whole bool, err error)
	// take returns a copy of the listener on addr that a process of the
	// child pid holds (child socket mode), owned by the caller, and its
	// inode; an error when there is none, more than one, or the master
	// may not take it.
	take(ctx context.Context, pid int, addr string) (fd int, inode uint64, err error)
}

// waitSpec is what a child must be seen waiting on to be ready by
// --ready listen.
type waitSpec struct {
	pid int
	// listen is the listener a child of child socket mode binds: the
	// first one.
	listen Listener
	// fd is, in master socket mode, the master's descriptor of the
	// socket the child was given; -1 in child socket mode.
	fd int
}

// spawnSpec is one process to start.
type spawnSpec struct {
	path  string
	argv  []string
	env   []string
	extra []int     // descriptors to pass as fd 3, 4, ...
	id    *identity // who the child runs as; nil: the master's identity
	// prefix makes the child's stdout and stderr pipes whose lines the
	// master copies to its own, each prefixed with the child's slot and
	// pid (--child-output prefix).
	prefix bool
	slot   int
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
	procs   procs
	clock   clock
	observe observer
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
	// upgrade checks and execs a new master binary; nil: the master
	// cannot upgrade in place.
	upgrade upgrader
	// fdstore is systemd's file descriptor store for master socket
	// mode's listeners (fdstore_linux.go); nil when there is none.
	fdstore *fdStore
}
