package child

import (
	"fmt"
	"os"

	"github.com/coreos/go-systemd/v22/daemon"
)

// envNotifySocket is the sd_notify socket's address (sd_notify(3)).
const envNotifySocket = "NOTIFY_SOCKET"

// Ready tells the master (or systemd) that the child accepts connections,
// by sending READY=1 to NOTIFY_SOCKET. Call it once the listener is being
// served. Without NOTIFY_SOCKET it does nothing and returns nil, so a
// standalone run needs no special case. NOTIFY_SOCKET stays set for later
// messages; the master ignores datagrams from processes it did not start.
//
// When WATCHDOG_USEC is set too (the master's --watchdog, or systemd's
// WatchdogSec), and WATCHDOG_PID is unset or names this process, Ready
// starts a goroutine that sends WATCHDOG=1 at once and then every half
// WATCHDOG_USEC, as long as the check given to SetWatchdogCheck passes,
// until the process exits; draining does not stop it. The first call
// reads WATCHDOG_USEC and WATCHDOG_PID and unsets them, so a process the
// child starts does not ping for it; the goroutine starts once, after
// the first READY=1 that was sent.
//
// A malformed WATCHDOG_PID, or a malformed WATCHDOG_USEC meant for this
// process (not a positive decimal), is an error, as a malformed variable
// is for Env and Listen; it is returned by this call and every later one,
// and READY=1 is then not sent: the master asked for a watchdog the child
// cannot keep, and refusing before readiness fails the start or reload
// with a clear message instead of leaving a child that is never watched.
// Without NOTIFY_SOCKET the variables are not checked.
func Ready() error {
	interval, err := watchdogInterval()
	if err != nil {
		if !notifying() {
			return nil // standalone: there is nobody to ping
		}
		return err
	}
	sent, err := daemon.SdNotify(false, daemon.SdNotifyReady)
	if err != nil {
		return fmt.Errorf("notify ready: %w", err)
	}
	if sent && interval > 0 {
		startWatchdog(interval)
	}
	return nil
}

// notifying reports whether NOTIFY_SOCKET is set, as SdNotify reads it.
func notifying() bool {
	return os.Getenv(envNotifySocket) != ""
}
