package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

// The admin API, HTTP over the control socket (curl --unix-socket works):
//
//	GET  /status  200 with the Status as JSON
//	POST /reload  waits; 200 {"generation":N}, or 409 (rejected) or 500
//	              (rolled back) with {"error":"why","generation":N}
//	POST /scale?workers=N  200 {"workers":N} once children are started or
//	              told to drain; 400 or 409 with {"error"}
//	POST /stop    202, then a graceful stop

// ScaleReply is the JSON body of POST /scale.
type ScaleReply struct {
	Workers int    `json:"workers"`
	Error   string `json:"error,omitempty"`
}

// ReloadReply is the JSON body of POST /reload.
type ReloadReply struct {
	Generation int    `json:"generation"`
	Error      string `json:"error,omitempty"`
}

func (s *Supervisor) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		res := s.Reload(r.Context())
		code := http.StatusOK
		switch {
		case res.Err == nil:
		case errors.Is(res.Err, ErrReloadRejected):
			code = http.StatusConflict
		default:
			code = http.StatusInternalServerError
		}
		reply := ReloadReply{Generation: res.Generation}
		if res.Err != nil {
			reply.Error = res.Err.Error()
		}
		writeJSON(w, code, reply)
	})
	mux.HandleFunc("POST /scale", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("workers"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ScaleReply{Error: "workers: not a whole number"})
			return
		}
		res := s.Scale(n)
		reply := ScaleReply{Workers: res.Workers}
		code := http.StatusOK
		if res.Err != nil {
			reply.Error = res.Err.Error()
			code = http.StatusConflict
		}
		writeJSON(w, code, reply)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		s.Stop(StopGraceful)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// listenControl creates the control socket at path with mode 0600. A
// socket file left by a master that is gone is replaced; one a live master
// answers on is refused, since two masters on one socket would each take
// the other's commands.
func listenControl(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control: %s is in use by a running master; stop it or give --control another path", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("control: %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control: remove stale socket: %w", err)
		}
	}
	// Mode 0600 from the socket's first moment: Linux gives the file the
	// mode of the socket's inode at bind, so set it before. A chmod after
	// bind would leave a window; a umask would touch the whole process.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.Fchmod(int(fd), 0o600) }); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	// Removal is ours (Run removes it at exit); closing must not race a
	// successor's socket at the same path.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}
