package child

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Without socket activation for this pid, Listen binds PREFORK_LISTEN with
// SO_REUSEPORT, so a second child can bind the same address.
func TestListenBindsPreforkListen(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", fmt.Sprint(os.Getpid()+1)) // not us: must be ignored
	t.Setenv("PREFORK_LISTEN", "127.0.0.1:0")
	useFreshListeners(t)
	ln, err := Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("PREFORK_LISTEN", ln.Addr().String())
	useFreshListeners(t) // a second child
	peer, err := Listen(context.Background())
	if err != nil {
		t.Fatalf("second child on %s: %v", ln.Addr(), err)
	}
	peer.Close()
	if os.Getenv("LISTEN_FDS") != "1" {
		t.Error("LISTEN_FDS meant for another pid was unset")
	}
}

func TestListenBindFailure(t *testing.T) {
	t.Setenv("PREFORK_LISTEN", "127.0.0.1:notaport")
	useFreshListeners(t)
	_, err := Listen(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), `listener "default": bind: `) {
		t.Fatalf("Listen on a bad address: %v, want a bind listener error", err)
	}
}
