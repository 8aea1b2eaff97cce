package supervisor

import (
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/sdwatchdog"
	"golang.org/x/sys/unix"
)

// WatchdogGrace is how long a child the watchdog sent SIGQUIT has to exit
// (a Go program prints its goroutines and exits 2) before SIGKILL.
const WatchdogGrace = 3 * time.Second

// watchdogPing records a child's WATCHDOG=1, received at, and arms or
// re-arms its watchdog. The timer is the child's own, like its ready
// timer: nothing polls.
func (s *Supervisor) watchdogPing(c *child, at time.Time) {
	d := c.gen.cfg.Watchdog
	if d <= 0 || c.life == lifeDraining || c.life == lifeHung || c.life == lifeLate {
		return
	}
	c.lastPing = at
	c.graced = false
	if c.watchdogTimer == nil {
		c.watchdogTimer = s.env.clock.AfterFunc(d, func() { s.send(watchdogExpired{c: c}) })
		s.log.Debug("child watchdog armed", "slot", c.slot, "pid", c.pid, "watchdog_ms", millis(d))
		return
	}
	c.watchdogTimer.Reset(d)
}

// watchdogExpired acts on a watchdog timer that fired: unless a ping came
// in meanwhile, the child is hung. SIGQUIT first, to the child alone, so
// that it can say where it hangs; SIGKILL to its group after the grace.
func (s *Supervisor) watchdogExpired(c *child) {
	d := c.gen.cfg.Watchdog
	if !s.live(c) || c.life == lifeDraining || c.life == lifeHung || c.life == lifeLate {
		return
	}
	silent := s.env.clock.Now().Sub(c.lastPing)
	if silent < d {
		return // pinged after the timer fired; Reset re-armed it
	}
	if silent > d+stallSlack(d) && !c.graced {
		// The timer fired long after it was due: the master itself was
		// stopped or starved (SIGSTOP, CPU throttling, a long burst of
		// work), and pings may still wait in its socket. Judge again a
		// full period from now rather than kill a child for the master's
		// silence.
		s.log.Warn("watchdog check came late; the master was stalled, giving the child a new period",
			"slot", c.slot, "pid", c.pid, "late_ms", millis(silent-d))
		// Once in a row only: a master that stays late must still
		// catch a child that hangs.
		c.graced = true
		c.lastPing = s.env.clock.Now()
		c.watchdogTimer.Reset(d)
		return
	}
	if c.life == lifeStarting {
		// It pinged before READY=1 and then went silent: its ready
		// timeout still runs, but it is hung all the same.
		stopTimer(c.readyTimer)
	}
	c.life = lifeHung
	s.tally.watchdogKills[c.slot]++
	s.log.Error("child missed its watchdog; sending SIGQUIT, then SIGKILL", "slot", c.slot,
		"generation", c.gen.number, "pid", c.pid, "silent_ms", millis(silent),
		"watchdog_ms", millis(d), "grace_ms", millis(WatchdogGrace))
	s.kill(c, unix.SIGQUIT)
	c.graceTimer = s.env.clock.AfterFunc(WatchdogGrace, func() { s.send(watchdogGraceOver{c: c}) })
	s.steerNow(c)
	if c.gen == s.reload.next && s.reload.roll != nil {
		// A rollout does not wait for the exit to turn back.
		s.newChildFailed(c, fmt.Sprintf("missed its watchdog: no WATCHDOG=1 for %v", d))
	}
}

// watchdogGraceOver kills a hung child that outlived its SIGQUIT.
func (s *Supervisor) watchdogGraceOver(c *child) {
	if !s.live(c) {
		return
	}
	s.log.Error("child still alive after SIGQUIT from the watchdog; sending SIGKILL", "slot", c.slot,
		"generation", c.gen.number, "pid", c.pid)
	s.kill(c, unix.SIGKILL)
}

// stallSlack is how late a watchdog timer may be processed before the
// lateness is blamed on the master rather than the child.
func stallSlack(d time.Duration) time.Duration { return max(d/2, 50*time.Millisecond) }

// systemdWatchdog returns the master's own watchdog period, from
// WATCHDOG_USEC (and WATCHDOG_PID) as systemd sets them for WatchdogSec=,
// or 0 when there is none; malformed variables are an error.
func systemdWatchdog() (time.Duration, error) { return sdwatchdog.Enabled() }
