package supervisor

import (
	"os"
	"strconv"
	"time"

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
	if d <= 0 || c.state == StateDraining || c.watchdogKilled || c.notReady {
		return
	}
	c.lastPing = at
	c.stallGraced = false
	if c.watchdogTimer == nil {
		c.watchdogTimer = time.AfterFunc(d, func() { s.send(watchdogExpired{c: c}) })
		s.log.Debug("child watchdog armed", "slot", c.slot, "pid", c.pid, "watchdog", d.String())
		return
	}
	c.watchdogTimer.Reset(d)
}

// watchdogExpired acts on a watchdog timer that fired: unless a ping came
// in meanwhile, the child is hung. SIGQUIT first, to the child alone, so
// that it can say where it hangs; SIGKILL to its group after the grace.
func (s *Supervisor) watchdogExpired(c *child) {
	d := c.gen.cfg.Watchdog
	if !s.live(c) || c.state == StateDraining || c.watchdogKilled {
		return
	}
	silent := time.Since(c.lastPing)
	if silent < d {
		return // pinged after the timer fired; Reset re-armed it
	}
	if silent > d+stallSlack(d) && !c.stallGraced {
		// The timer fired long after it was due: the master itself was
		// stopped or starved (SIGSTOP, CPU throttling, a long burst of
		// work), and pings may still wait in its socket. Judge again a
		// full period from now rather than kill a child for the master's
		// silence.
		s.log.Warn("watchdog check came late; the master was stalled, giving the child a new period",
			"slot", c.slot, "pid", c.pid, "late", (silent - d).Round(time.Millisecond).String())
		// Once in a row only: a master that stays late must still
		// catch a child that hangs.
		c.stallGraced = true
		c.lastPing = time.Now()
		c.watchdogTimer.Reset(d)
		return
	}
	c.watchdogKilled = true
	s.watchdogKills[c.slot]++
	s.log.Error("child missed its watchdog; sending SIGQUIT, then SIGKILL", "slot", c.slot,
		"generation", c.gen.number, "pid", c.pid, "silent", silent.Round(time.Millisecond).String(),
		"watchdog", d.String(), "grace", WatchdogGrace.String())
	s.kill(c, unix.SIGQUIT)
	c.killTimer = time.AfterFunc(WatchdogGrace, func() { s.send(watchdogGraceOver{c: c}) })
}

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
// WATCHDOG_USEC as systemd sets it for WatchdogSec=, or 0.
func systemdWatchdog() time.Duration {
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}
