package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

// defaultControl is the control path of supervisor.DefaultControl for
// the user running the command.
func defaultControl() string {
	return supervisor.DefaultControl(os.Geteuid(), os.Getenv("XDG_RUNTIME_DIR"))
}

func controlFlag() cli.Flag {
	return &cli.StringFlag{Name: "control", Usage: "admin unix socket", Value: defaultControl(),
		EnvVars: []string{"PREFORK_CONTROL"}}
}

// client talks to a running master's admin API.
type client struct {
	path string
	http *http.Client
}

// newClient returns a client of the master at --control. Requests time out
// after timeout (0: never, for a reload, which takes as long as it takes).
func newClient(c *cli.Context, timeout time.Duration) *client {
	path := c.String("control")
	return &client{path: path, http: &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialControl(ctx, path)
		},
	}}}
}

// dialError is a connection to the control socket that failed or was
// refused: its text is the one line the command prints.
type dialError struct{ msg string }

func (e *dialError) Error() string { return e.msg }

// dialControl connects to the control socket at path and checks who
// serves it (SO_PEERCRED): only a master of the caller's own user or
// root, or of the user whose private directory holds the socket (a
// service's, servesOwnDir), is told anything. Another user's socket at the path would
// otherwise take the command and answer what it liked.
func dialControl(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, syscall.EACCES):
		return nil, &dialError{fmt.Sprintf("permission denied: the control socket at %s belongs to %s; run as that user or root",
			path, ownerName(path))}
	case err != nil:
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, &dialError{fmt.Sprintf("no master is running at %s (%v)", path, err)}
	}
	uid, pid, err := supervisor.PeerCred(conn)
	if err != nil {
		conn.Close()
		return nil, &dialError{fmt.Sprintf("control socket %s: %v", path, err)}
	}
	if !supervisor.TrustedPeer(uid) && !servesOwnDir(path, uid) {
		conn.Close()
		return nil, &dialError{fmt.Sprintf("the control socket at %s is served by %s (pid %d), not by this user or root: refusing to talk to it",
			path, userName(uid), pid)}
	}
	return conn, nil
}

// servesOwnDir reports whether the socket at path, and the directory it is
// in, belong to uid, in a directory only uid may write whose every
// ancestor is root's or uid's and writable by no one else (or sticky,
// as /tmp): a service's runtime directory (systemd's RuntimeDirectory=,
// with DynamicUser= or User=). Only uid could have put a socket there, so
// the master serving it is the service, not a squatter; root's client
// talks to it. Checked after connecting, with the peer's uid from the
// kernel: a path swapped in between would have to be uid's to pass.
func servesOwnDir(path string, uid int) bool {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return false
	}
	owner := func(p string) (*syscall.Stat_t, bool) {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return nil, false
		}
		return &st, int(st.Uid) == uid || st.Uid == 0
	}
	if st, ok := owner(real); !ok || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || int(st.Uid) != uid {
		return false
	}
	dir := filepath.Dir(real)
	if st, ok := owner(dir); !ok || int(st.Uid) != uid || st.Mode&0o022 != 0 {
		return false
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, ok := owner(p)
		if !ok || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return false
		}
		if st.Mode&0o022 != 0 && st.Mode&syscall.S_ISVTX == 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

// ownerName names the owner of the file at path, for a message.
func ownerName(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "another user"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "another user"
	}
	return userName(int(st.Uid))
}

// userName is "user NAME (uid N)", or "uid N" when it has no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("user %s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// do sends a request and returns the status and body; a master that is not
// there, or not one to talk to, is one clear line.
func (cl *client) do(method, path string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://master"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		var de *dialError
		if errors.As(err, &de) {
			return 0, nil, de
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:         "status",
		Usage:        "one row per child and per slot waiting to restart: slot, generation, pid, state, accepts, restarts, uptime, note",
		Flags:        []cli.Flag{controlFlag(), &cli.BoolFlag{Name: "json", Usage: "print the admin API's JSON"}},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			code, body, err := newClient(c, 10*time.Second).do(http.MethodGet, "/status")
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if code != http.StatusOK {
				return cli.Exit(fmt.Sprintf("status: %d %s", code, strings.TrimSpace(string(body))), exitFailure)
			}
			if c.Bool("json") {
				_, err := os.Stdout.Write(body)
				return err
			}
			var st supervisor.Status
			if err := json.Unmarshal(body, &st); err != nil {
				return cli.Exit("status: "+err.Error(), exitFailure)
			}
			printStatus(os.Stdout, st)
			return nil
		},
	}
}

func printStatus(w io.Writer, st supervisor.Status) {
	fmt.Fprintf(w, "master pid %d, version %s, generation %d, %d workers, sockets %s, ready %s",
		st.PID, st.Version, st.Generation, st.Workers, st.Sockets, st.Ready)
	if st.Upgrades > 0 {
		fmt.Fprintf(w, ", upgraded in place %d times", st.Upgrades)
	}
	if st.UpgradeError != "" {
		fmt.Fprintf(w, "; the last upgrade failed: %s", st.UpgradeError)
	}
	fmt.Fprintln(w)
	if len(st.Listen) > 0 {
		fmt.Fprintf(w, "listen %s\n", strings.Join(st.Listen, ", "))
	}
	if st.Reload != nil {
		fmt.Fprintln(w, reloadLine(*st.Reload))
	}
	// DATAGRAMS only where a listener is UDP: the table stays as it was
	// for everyone else.
	udp := slices.ContainsFunc(st.Listen, func(l string) bool { return strings.Contains(l, "=udp://") })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	counts := "ACCEPTS"
	if udp {
		counts += "\tDATAGRAMS"
	}
	fmt.Fprintf(tw, "SLOT\tGEN\tPID\tSTATE\t%s\tRESTARTS\tUPTIME\tNOTE\n", counts)
	for _, ch := range st.Children {
		pid, up := strconv.Itoa(ch.PID), (time.Duration(ch.UptimeSeconds) * time.Second).String()
		var notes []string
		if ch.State == supervisor.StateBackoff {
			pid, up = "-", "-"
			retry := time.Duration(ch.RetryInSeconds * float64(time.Second)).Round(time.Millisecond)
			notes = append(notes, fmt.Sprintf("last exit: %s; next attempt in %v", ch.LastExit, retry))
		}
		if ch.Note != "" {
			notes = append(notes, ch.Note)
		}
		n := strconv.FormatUint(ch.Accepts, 10)
		if udp {
			n += "\t" + strconv.FormatUint(ch.Datagrams, 10)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", ch.Slot, ch.Generation, pid, ch.State, n,
			ch.Restarts, up, strings.Join(notes, "; "))
	}
	tw.Flush()
}

// reloadLine is the line of master status on the reload in progress:
// "reload: rolling, 3/8 slots done, generation 5, strategy rolling, 41.2s
// elapsed"; what is not known yet (while the configuration loads) is
// left out.
func reloadLine(r supervisor.ReloadStatus) string {
	parts := []string{"reload: " + r.Phase}
	if r.Slots > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d slots done", r.SlotsDone, r.Slots))
	}
	if r.Generation > 0 {
		parts = append(parts, fmt.Sprintf("generation %d", r.Generation))
	}
	if r.Strategy != "" {
		parts = append(parts, "strategy "+r.Strategy)
	}
	if r.Canary > 0 {
		canary := fmt.Sprintf("canary %d", r.Canary)
		if r.Phase == "canary" {
			canary += fmt.Sprintf(" with %v of watch left", seconds(r.CanaryLeftSeconds))
		}
		parts = append(parts, canary)
	}
	parts = append(parts, fmt.Sprintf("%v elapsed", seconds(r.ElapsedSeconds)))
	return strings.Join(parts, ", ")
}

// seconds is a number of seconds as a duration, to a tenth of a second.
func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Millisecond)
}

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name: "reload",
		Usage: "reload and wait: exit 0 when the new generation serves, 1 with the reason otherwise; " +
			"--strategy, --max-surge, --canary and --canary-for replace the configuration's for this reload",
		Flags: []cli.Flag{controlFlag(),
			&cli.StringFlag{Name: "strategy", Usage: "this reload's `MODE`: generation or rolling (--reload-strategy of master run)"},
			&cli.StringFlag{Name: "max-surge", Usage: "a rolling reload replaces `N` slots at a time (N >= 1)"},
			&cli.StringFlag{Name: "canary", Usage: "replace `N` slots first and watch them before the rest"},
			&cli.StringFlag{Name: "canary-for", Usage: "how long the canaries are watched (a duration `D` such as 30s)"},
		},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			query, err := reloadQuery(c)
			if err != nil {
				return cli.Exit("reload: "+err.Error(), exitBadInput)
			}
			code, body, err := newClient(c, 0).do(http.MethodPost, "/reload"+query)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			var r supervisor.ReloadReply
			if err := json.Unmarshal(body, &r); err != nil {
				return cli.Exit(fmt.Sprintf("reload: %d %s", code, strings.TrimSpace(string(body))), exitFailure)
			}
			if code != http.StatusOK {
				return cli.Exit(r.Error, exitFailure)
			}
			fmt.Fprintf(c.App.Writer, "generation %d serves\n", r.Generation)
			return nil
		},
	}
}

// reloadFlags maps the flags of master reload to the query parameters of
// POST /reload.
var reloadFlags = []struct{ flag, param string }{
	{"strategy", "strategy"}, {"max-surge", "max_surge"}, {"canary", "canary"}, {"canary-for", "canary_for"},
}

// reloadQuery is the query of POST /reload ("?strategy=rolling&...", or ""
// with none) for the flags given to master reload, and only those. The
// master checks the values; this refuses the obvious mistakes first, in
// the flag's own name, so that nothing is sent.
func reloadQuery(c *cli.Context) (string, error) {
	var o supervisor.ReloadOptions
	q := url.Values{}
	for _, f := range reloadFlags {
		if !c.IsSet(f.flag) {
			continue
		}
		v := c.String(f.flag)
		var err error
		switch f.flag {
		case "strategy":
			o.Strategy = v
			if v == "" {
				err = fmt.Errorf("--strategy: %q is not generation or rolling", v)
			}
		case "max-surge":
			o.MaxSurge, err = parseInt("--max-surge", v)
			if err == nil && o.MaxSurge < 1 {
				err = fmt.Errorf("--max-surge: %d must be at least 1", o.MaxSurge)
			}
		case "canary":
			o.Canary, err = parseInt("--canary", v)
		case "canary-for":
			o.CanaryFor, err = time.ParseDuration(v)
			if err != nil {
				err = fmt.Errorf("--canary-for: %q is not a duration such as 10s or 1m30s", v)
			}
		}
		if err == nil {
			// The flags before this one passed: what Check finds is in
			// this one's, in the words of master run's setting
			// ("max-surge: 5000 is out of range 1..4096").
			if cerr := o.Check(); cerr != nil {
				_, reason, _ := strings.Cut(cerr.Error(), ": ")
				err = fmt.Errorf("--%s: %s", f.flag, reason)
			}
		}
		if err != nil {
			return "", err
		}
		q.Set(f.param, v)
	}
	if len(q) == 0 {
		return "", nil
	}
	return "?" + q.Encode(), nil
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:         "stop",
		Usage:        "graceful stop (same as SIGTERM)",
		Flags:        []cli.Flag{controlFlag()},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			code, body, err := newClient(c, 10*time.Second).do(http.MethodPost, "/stop")
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if code != http.StatusAccepted {
				return cli.Exit(fmt.Sprintf("stop: %d %s", code, strings.TrimSpace(string(body))), exitFailure)
			}
			return nil
		},
	}
}

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:         "scale",
		Usage:        "change the number of workers live",
		ArgsUsage:    "N",
		Flags:        []cli.Flag{controlFlag()},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			n, err := parseInt("workers", c.Args().First())
			if err != nil || c.NArg() != 1 {
				return cli.Exit("scale: want one whole number of workers, such as: master scale 8", exitBadInput)
			}
			if n < 1 {
				return cli.Exit(fmt.Sprintf("scale: workers: %d is out of range 1..%d", n, supervisor.MaxWorkers), exitBadInput)
			}
			code, body, err := newClient(c, time.Minute).do(http.MethodPost, fmt.Sprintf("/scale?workers=%d", n))
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			var r supervisor.ScaleReply
			if err := json.Unmarshal(body, &r); err != nil {
				return cli.Exit(fmt.Sprintf("scale: %d %s", code, strings.TrimSpace(string(body))), exitFailure)
			}
			if code != http.StatusOK {
				return cli.Exit("scale: "+r.Error, exitFailure)
			}
			fmt.Printf("%d workers\n", r.Workers)
			return nil
		},
	}
}
