package child

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready tells the master (or systemd) that the child accepts connections,
// by sending READY=1 to NOTIFY_SOCKET. Call it once the listener is being
// served. Without NOTIFY_SOCKET it does nothing and returns nil, so a
// standalone run needs no special case. NOTIFY_SOCKET stays set for later
// messages; the master ignores datagrams from processes it did not start.
func Ready() error {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return fmt.Errorf("notify ready: %w", err)
	}
	return nil
}
