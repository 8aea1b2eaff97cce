package supervisor

import "github.com/coreos/go-systemd/v22/daemon"

// notifySystemd tells the service manager that started the master, if any
// (NOTIFY_SOCKET in the master's environment), about the master's state:
// the Type=notify-reload protocol of systemd.
func (s *Supervisor) notifySystemd(state string) {
	if !s.systemd {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		s.log.Warn("sd_notify to the service manager", "err", err)
	}
}
