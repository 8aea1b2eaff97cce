package supervisor

import (
	"os"
	"testing"

	"github.com/coreos/go-systemd/v22/daemon"
)

// A real sd_notify client reaches the server, and the kernel tells the
// server who sent the message.
func TestNotifyServerCredentials(t *testing.T) {
	ns, err := listenNotify()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.close() })
	t.Setenv("NOTIFY_SOCKET", ns.addr)
	sent, err := daemon.SdNotify(false, "STATUS=warming up\nREADY=1")
	if err != nil || !sent {
		t.Fatalf("SdNotify = %v, %v; want true, nil", sent, err)
	}
	buf := make([]byte, notifyMaxDatagram)
	oob := make([]byte, credentialsSpace)
	pid, uid, data, err := ns.read(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() || uid != os.Getuid() {
		t.Errorf("sender pid %d uid %d, want %d %d", pid, uid, os.Getpid(), os.Getuid())
	}
	if got := parseNotify(data); !got.Ready || got.Status != "warming up" {
		t.Errorf("message = %+v, want READY and STATUS", got)
	}
}
