package child

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prefork/prefork/pkg/sdwatchdog"
)

// watchdog is package state for the same reason as drain: the WATCHDOG_*
// variables belong to the process, which pings from one goroutine only,
// however many times Ready is called.
var watchdog struct {
	read     sync.Once
	interval time.Duration // zero: no watchdog for this process
	err      error         // a malformed variable, returned by every Ready

	start sync.Once
	check atomic.Pointer[func(context.Context) error]
}

// SetWatchdogCheck registers a health check the watchdog pinger runs
// before every WATCHDOG=1: while check fails the child sends no ping, so
// a master started with --watchdog (or systemd with WatchdogSec) treats
// the child as hung and replaces it. Without a check the pings only prove
// that the Go scheduler runs; a check proves the server can make progress,
// for instance by taking the locks its handlers take.
//
// check must return within a quarter of WATCHDOG_USEC (half the ping
// period); its ctx carries that deadline. A check that has not returned
// by then counts as failing, and no second check starts while it is still
// running, so a deadlocked check costs one goroutine, not one per tick.
// The first failure of a streak is reported in one line on stderr; the
// pinger prints nothing else.
//
// It may be called before or after Ready, and again to replace the check;
// nil removes it. Without a watchdog (WATCHDOG_USEC unset) it has no
// effect. Pinging, and so the check, goes on while the child drains: the
// master ignores a draining child's watchdog anyway, but systemd does not,
// and a child stuck in its drain is still caught by the drain timeout.
func SetWatchdogCheck(check func(ctx context.Context) error) {
	if check == nil {
		watchdog.check.Store(nil)
		return
	}
	watchdog.check.Store(&check)
}

// currentCheck returns the registered check, or nil.
func currentCheck() func(context.Context) error {
	if p := watchdog.check.Load(); p != nil {
		return *p
	}
	return nil
}

// watchdogInterval reads the WATCHDOG_* variables once per process and
// unsets them, as sd_watchdog_enabled(3) does, so a process this child
// starts does not ping for it; later calls return the first answer. The
// master sets WATCHDOG_USEC under --watchdog; it cannot know the pid
// before the fork, so it leaves WATCHDOG_PID unset. Variables meant for
// another pid are no watchdog, and not checked further; a malformed
// WATCHDOG_PID, or a WATCHDOG_USEC for this pid that is not a positive
// count of microseconds, is an error (see sdwatchdog.Parse).
func watchdogInterval() (time.Duration, error) {
	watchdog.read.Do(func() {
		watchdog.interval, watchdog.err = sdwatchdog.Enabled()
		for _, name := range []string{sdwatchdog.EnvUSec, sdwatchdog.EnvPID} {
			_ = os.Unsetenv(name) // fails only for an invalid name
		}
	})
	return watchdog.interval, watchdog.err
}

// startWatchdog starts the process's one pinger for a watchdog of
// interval; it does nothing after the first call. The pinger runs until
// the process exits: a draining child must not be killed as hung either.
func startWatchdog(interval time.Duration) {
	watchdog.start.Do(func() {
		go newPinger(interval, currentCheck, notifyWatchdog, os.Stderr).run()
	})
}

// notifyWatchdog sends WATCHDOG=1 to NOTIFY_SOCKET.
func notifyWatchdog() error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	return err
}

// pinger sends WATCHDOG=1 every half interval, as sd_watchdog_enabled(3)
// recommends, when the health check passes. Only its own goroutine uses
// it once run has begun.
type pinger struct {
	period time.Duration // between ticks: half the watchdog interval
	budget time.Duration // how long a check may take: half a period
	check  func() func(context.Context) error
	notify func() error
	stderr io.Writer

	inflight chan error // the running check's result, or nil
	failing  bool       // the last tick's check failed
}

// newPinger makes a pinger for a watchdog of interval. A check answered
// within budget is followed by its ping within budget, so consecutive
// pings are at most 1.5 periods (three quarters of interval) apart.
func newPinger(interval time.Duration, check func() func(context.Context) error, notify func() error, stderr io.Writer) *pinger {
	period := max(interval/2, 1)
	return &pinger{
		period: period,
		budget: max(period/2, 1),
		check:  check,
		notify: notify,
		stderr: stderr,
	}
}

// run ticks at once, which arms the master's watchdog as early as
// possible, then every period, forever.
func (p *pinger) run() {
	t := time.NewTicker(p.period)
	defer t.Stop()
	for {
		p.tick()
		<-t.C
	}
}

// tick pings if the check passes. A failed send is not reported: it means
// the master is gone, and the parent-death signal already drains us.
func (p *pinger) tick() {
	if err := p.healthy(); err != nil {
		if !p.failing {
			fmt.Fprintf(p.stderr, "prefork child: watchdog pings stop until the check passes: %v\n", err)
		}
		p.failing = true
		return
	}
	p.failing = false
	_ = p.notify()
}

// healthy runs the check, or keeps waiting for the one still running from
// an earlier tick, for at most budget.
func (p *pinger) healthy() error {
	if p.inflight == nil {
		check := p.check()
		if check == nil {
			return nil
		}
		result := make(chan error, 1) // the check never blocks on sending
		ctx, cancel := context.WithTimeout(context.Background(), p.budget)
		go func() {
			defer cancel()
			result <- check(ctx)
		}()
		p.inflight = result
	}
	t := time.NewTimer(p.budget)
	defer t.Stop()
	select {
	case err := <-p.inflight:
		p.inflight = nil
		if err != nil {
			return fmt.Errorf("watchdog check: %w", err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("watchdog check: still running after %v", p.budget)
	}
}
