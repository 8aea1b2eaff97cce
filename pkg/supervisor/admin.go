package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The admin API, HTTP over the control socket (curl --unix-socket works):
//
//	GET  /status  200 with the Status as JSON
//	POST /reload[?strategy=MODE&max_surge=N&canary=N&canary_for=D]
//	              waits; 200 {"generation":N}, or 409 (rejected) or 500
//	              (rolled back) with {"error":"why","generation":N}; 400
//	              {"error"} for a query it does not take, and no reload
//	POST /scale?workers=N  200 {"workers":N} once children are started or
//	              told to drain; 400 or 409 with {"error"}
//	POST /upgrade[?binary=PATH]  202 {"from","to","pid"} once the new
//	              binary passed its check, then the exec; 409 with {"error"}
//	POST /stop    202, then a graceful stop

// ScaleReply is the JSON body of POST /scale.
type ScaleReply struct {
	Workers int    `json:"workers"`
	Error   string `json:"error,omitempty"`
}

// UpgradeReply is the JSON body of POST /upgrade: 202 once the new
// binary passed its check and the exec follows (GET /status tells when
// the new master answers), or 409 (refused) with the error.
type UpgradeReply struct {
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	PID   int    `json:"pid"`
	Error string `json:"error,omitempty"`
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
	mux.HandleFunc("POST /reload", untimed(func(w http.ResponseWriter, r *http.Request) {
		opts, err := parseReloadQuery(r.URL.RawQuery)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ReloadReply{Error: err.Error()})
			return
		}
		res := s.ReloadWith(r.Context(), opts)
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
	}))
	mux.HandleFunc("POST /upgrade", untimed(func(w http.ResponseWriter, r *http.Request) {
		res := s.Upgrade(r.Context(), r.URL.Query().Get("binary"))
		reply := UpgradeReply{From: res.From, To: res.To, PID: res.PID}
		code := http.StatusAccepted
		switch {
		case res.Err == nil:
		case errors.Is(res.Err, ErrUpgradeRejected):
			code = http.StatusConflict
		default:
			code = http.StatusInternalServerError
		}
		if res.Err != nil {
			reply.Error = res.Err.Error()
		}
		// Whole, with its length, and flushed: the exec that follows
		// Answered ends the connection, and a chunked answer would
		// miss its last chunk.
		body, _ := json.Marshal(reply)
		body = append(body, '\n')
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(code)
		w.Write(body)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		res.Answered()
	}))
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

// The query parameters of POST /reload, each one reload's own value of
// a setting of `master run` (ReloadOptions).
const (
	queryStrategy  = "strategy"   // --reload-strategy
	queryMaxSurge  = "max_surge"  // --max-surge
	queryCanary    = "canary"     // --canary
	queryCanaryFor = "canary_for" // --canary-for
)

// reloadParams are the parameters POST /reload takes, in the order its
// errors name them.
var reloadParams = []string{queryStrategy, queryMaxSurge, queryCanary, queryCanaryFor}

// parseReloadQuery reads the query of POST /reload into one reload's
// options. Each parameter may be given once; a parameter it does not
// know, one given twice, or a value that is malformed or out of range is
// an error that names the parameter: an operator's typo must not turn
// into a reload with the configuration's settings. A parameter not given
// leaves its field zero (the configuration's value); canary=0 turns a
// configured canary off for this reload.
func parseReloadQuery(raw string) (ReloadOptions, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return ReloadOptions{}, fmt.Errorf("query: %w", err)
	}
	var unknown []string
	for k := range q {
		if !slices.Contains(reloadParams, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return ReloadOptions{}, fmt.Errorf("unknown query parameter %s (known: %s)",
			strings.Join(unknown, ", "), strings.Join(reloadParams, ", "))
	}
	var o ReloadOptions
	for _, k := range reloadParams {
		vs, ok := q[k]
		if !ok {
			continue
		}
		if len(vs) > 1 {
			return ReloadOptions{}, fmt.Errorf("%s: given %d times", k, len(vs))
		}
		err := o.setParam(k, vs[0])
		if err == nil {
			// The fields before k passed: what Check finds is in k's.
			err = checkReason(o.Check())
		}
		if err != nil {
			return ReloadOptions{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	return o, nil
}

// setParam sets the field of o that the query parameter k names to v, read
// as the setting of `master run` is read.
func (o *ReloadOptions) setParam(k, v string) (err error) {
	switch k {
	case queryStrategy:
		if v == "" {
			return errors.New(`"" is not generation or rolling`)
		}
		o.Strategy = v
	case queryMaxSurge:
		o.MaxSurge, err = parsePositive(v)
	case queryCanary:
		o.Canary, err = parseNonNegative(v)
		o.NoCanary = err == nil && o.Canary == 0
	case queryCanaryFor:
		o.CanaryFor, err = parseDuration(v)
	}
	return err
}

// checkReason is err of ReloadOptions.Check without the name of the
// setting it starts with ("max-surge: 5000 is out of range 1..4096"
// reads "5000 is out of range 1..4096"), for a message that names the
// query parameter instead.
func checkReason(err error) error {
	if err == nil {
		return nil
	}
	if _, reason, ok := strings.Cut(err.Error(), ": "); ok {
		return errors.New(reason)
	}
	return err
}

// untimed lifts the server's read and write deadlines for h's requests,
// which take as long as they take (a reload: ready timeouts, drains): a
// deadline would cut the answer, and the read deadline, when it passes,
// would cancel the request's context and with it the wait.
func untimed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// DefaultControl is the control socket's path when none is given, for a
// user of effective uid euid whose XDG_RUNTIME_DIR is xdg ("" when
// unset): root's is /run/prefork/prefork.sock; another user's is in
// their runtime directory, else in /tmp/prefork-UID, a directory of
// their own with mode 0700 that the master makes. Never a path in a
// directory that others may write: one of them could put a socket there
// first and take the client commands.
func DefaultControl(euid int, xdg string) string {
	switch {
	case euid == 0:
		return "/run/prefork/prefork.sock"
	case xdg != "":
		return filepath.Join(xdg, "prefork.sock")
	}
	return filepath.Join(privateControlDir(euid), "prefork.sock")
}

// privateControlDir is the directory of the default control socket of a
// user with no runtime directory.
func privateControlDir(euid int) string { return fmt.Sprintf("/tmp/prefork-%d", euid) }

// TrustedPeer reports whether a process of uid may be on the other end
// of a control connection: the master's own user, or root.
func TrustedPeer(uid int) bool { return uid == 0 || uid == os.Geteuid() }

// checkControlPeer refuses a control connection from any other user (the
// socket's mode already keeps them out; a chmod or a directory bind
// would not).
func checkControlPeer(c net.Conn) error {
	uid, pid, err := PeerCred(c)
	if err != nil {
		return err
	}
	if !TrustedPeer(uid) {
		return fmt.Errorf("a process of uid %d (pid %d) is neither the master's user (uid %d) nor root", uid, pid, os.Geteuid())
	}
	return nil
}

// ownerOf returns the uid that owns fi.
func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// defaultControlDir reports whether dir is one that DefaultControl puts
// the socket in and the master makes: root's /run/prefork, or the
// private directory of a user with no runtime directory.
func defaultControlDir(dir string) bool {
	euid := os.Geteuid()
	return dir == privateControlDir(euid) || euid == 0 && dir == filepath.Dir(DefaultControl(0, ""))
}

// prepareControlDir checks the control socket's directory, and refuses
// one in which another user could replace the socket: a directory of
// another user (root aside), or one that others may write without the
// sticky bit. A directory of DefaultControl is made if missing, with
// mode 0700; the private one of a user (/tmp/prefork-UID) must then be
// the user's own with no access for others, since anyone may have made
// it first. Any other must exist.
func prepareControlDir(dir string, ours bool) error {
	euid := os.Geteuid()
	private := dir == privateControlDir(euid)
	// The private directory is in /tmp, where anyone may have put a
	// symbolic link by that name: it must be a directory itself.
	stat := os.Stat
	if private {
		stat = os.Lstat
	}
	fi, err := stat(dir)
	if ours && errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("control: make the directory %s: %w", dir, err)
		}
		fi, err = stat(dir)
	}
	if err != nil {
		if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" && filepath.Clean(xdg) == dir {
			// Left over by su or sudo, most often.
			return fmt.Errorf("control: %w (the directory XDG_RUNTIME_DIR names): unset it, or give --control another path", err)
		}
		return fmt.Errorf("control: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("control: %s is not a directory (%s)", dir, fi.Mode().Type())
	}
	owner, perm := ownerOf(fi), fi.Mode().Perm()
	switch {
	case private && (owner != euid || perm&0o077 != 0):
		return fmt.Errorf("control: %s must be a directory of uid %d with mode 0700, and it is uid %d's with mode %04o: remove it, set XDG_RUNTIME_DIR, or give --control a path in a directory of your own",
			dir, euid, owner, perm)
	case owner != euid && owner != 0:
		return fmt.Errorf("control: the directory %s belongs to uid %d, who could replace the socket: give --control a path in a directory of your own", dir, owner)
	case perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0:
		return fmt.Errorf("control: the directory %s is writable by other users (mode %04o), who could replace the socket: give --control a path in a directory of your own", dir, perm)
	}
	return nil
}

// listenControl creates the control socket at path with mode 0600, in a
// directory that prepareControlDir accepts. A socket file of ours left
// by a master that is gone is replaced; one a live master answers on is
// refused, since two masters on one socket would each take the other's
// commands; one of another user is refused.
func listenControl(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := prepareControlDir(dir, defaultControlDir(dir)); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if owner := ownerOf(fi); owner != os.Geteuid() {
			// Not ours to replace, nor to trust: whoever answers on it
			// would take our users' commands.
			return nil, fmt.Errorf("control: %s is a socket of uid %d, another user: remove it, or give --control another path", path, owner)
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
