package child

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

func TestListenSource(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     map[string]string
		want    source
		wantErr bool
	}{
		{name: "standalone", env: map[string]string{}, want: source{addr: fallbackAddr}},
		{name: "prefork listen", env: map[string]string{"PREFORK_LISTEN": "0.0.0.0:80"}, want: source{addr: "0.0.0.0:80"}},
		{
			name: "activated for us",
			env:  map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "4242", "PREFORK_LISTEN": "0.0.0.0:80"},
			want: source{inherited: true},
		},
		{
			name: "activated for another pid",
			env:  map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1", "PREFORK_LISTEN": "0.0.0.0:80"},
			want: source{addr: "0.0.0.0:80"},
		},
		{name: "no LISTEN_PID", env: map[string]string{"LISTEN_FDS": "1"}, want: source{addr: fallbackAddr}},
		{name: "zero fds", env: map[string]string{"LISTEN_FDS": "0", "LISTEN_PID": "4242"}, want: source{addr: fallbackAddr}},
		{name: "two fds", env: map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "4242"}, wantErr: true},
		{name: "malformed fds", env: map[string]string{"LISTEN_FDS": "x", "LISTEN_PID": "4242"}, wantErr: true},
		{name: "malformed pid", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "me"}, wantErr: true},
		{name: "fds for another pid not checked", env: map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "1"}, want: source{addr: fallbackAddr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := listenSource(mapEnv(tt.env), pid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("listenSource error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("listenSource = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Without socket activation for this pid, Listen binds PREFORK_LISTEN with
// SO_REUSEPORT, so a second child can bind the same address.
func TestListenBindsPreforkListen(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", fmt.Sprint(os.Getpid()+1)) // not us: must be ignored
	t.Setenv("PREFORK_LISTEN", "127.0.0.1:0")
	ln, err := Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("PREFORK_LISTEN", ln.Addr().String())
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
	_, err := Listen(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "bind listener: ") {
		t.Fatalf("Listen on a bad address: %v, want a bind listener error", err)
	}
}

func TestCountingListenerCountsAccepts(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	ln := &countingListener{Listener: inner, onAccept: func() { n.Add(1) }}
	defer ln.Close()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("counted %d accepts, want 3", got)
	}
	ln.Close()
	if _, err := ln.Accept(); err == nil || n.Load() != 3 {
		t.Fatalf("failed accept: err %v, count %d; want an error and no count", err, n.Load())
	}
}
