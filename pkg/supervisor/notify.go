package supervisor

import (
	"bytes"
	"strconv"
)

// notification is one sd_notify datagram, decoded. Only the fields prefork
// acts on are kept; unknown assignments are ignored, as systemd does.
type notification struct {
	Ready     bool   // READY=1
	Reloading bool   // RELOADING=1
	Stopping  bool   // STOPPING=1
	Watchdog  bool   // WATCHDOG=1
	Status    string // STATUS=...
	MainPID   int    // MAINPID=...
}

// parseNotify decodes an sd_notify datagram: newline-separated KEY=VALUE
// assignments. Malformed lines are skipped rather than failing the whole
// message, so a sender's extra fields never hide its READY=1.
func parseNotify(data []byte) notification {
	var n notification
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		key, value, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		switch string(key) {
		case "READY":
			n.Ready = string(value) == "1"
		case "RELOADING":
			n.Reloading = string(value) == "1"
		case "STOPPING":
			n.Stopping = string(value) == "1"
		case "WATCHDOG":
			n.Watchdog = string(value) == "1"
		case "STATUS":
			n.Status = string(value)
		case "MAINPID":
			if pid, err := strconv.Atoi(string(value)); err == nil && pid > 0 {
				n.MainPID = pid
			}
		}
	}
	return n
}
