package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

// upgradeWait bounds how long `master upgrade` waits for the new master
// to answer after the exec.
const upgradeWait = time.Minute

func upgradeCommand() *cli.Command {
	return &cli.Command{
		Name:  "upgrade",
		Usage: "re-exec the master in place from a new binary, keeping its pid, children, sockets and counts (same as SIGUSR2); exit 0 when the new master answers, 1 with the reason otherwise",
		Flags: []cli.Flag{controlFlag(),
			&cli.StringFlag{Name: "binary", Usage: "the new master binary, an ELF file of root's or the master's user that others may not write (default: the path the running master was exec'd from)"}},
		OnUsageError: usageError,
		Action:       upgradeAction,
	}
}

func upgradeAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("upgrade takes no argument; did you mean --binary %s?", c.Args().First()), exitBadInput)
	}
	cl := newClient(c, 10*time.Second)
	before, err := cl.status()
	if err != nil {
		return cli.Exit(err.Error(), exitFailure)
	}
	path := "/upgrade"
	if bin := c.String("binary"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return cli.Exit(fmt.Sprintf("upgrade: binary: %v", err), exitBadInput)
		}
		path += "?binary=" + url.QueryEscape(abs)
	}
	code, body, err := newClient(c, 0).do(http.MethodPost, path)
	if err != nil {
		return cli.Exit(err.Error(), exitFailure)
	}
	var r supervisor.UpgradeReply
	if err := json.Unmarshal(body, &r); err != nil {
		return cli.Exit(fmt.Sprintf("upgrade: %d %s", code, strings.TrimSpace(string(body))), exitFailure)
	}
	if code != http.StatusAccepted {
		return cli.Exit(r.Error, exitFailure)
	}
	// The exec ends the connection; the new master answers on the same
	// socket once it runs.
	deadline := time.Now().Add(upgradeWait)
	// Where this client sees the master's pid (not from another pid
	// namespace), a master gone is told at once, not after upgradeWait.
	visible := processLives(before.PID)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		st, err := cl.status()
		switch {
		case err != nil && visible && !processLives(before.PID):
			return cli.Exit(fmt.Sprintf("upgrade: the master (pid %d) exited during the exec to %s; see its log", before.PID, r.To), exitFailure)
		case err != nil:
			continue
		case st.Upgrades > before.Upgrades:
			if st.PID != before.PID {
				return cli.Exit(fmt.Sprintf("upgrade: the master's pid changed from %d to %d", before.PID, st.PID), exitFailure)
			}
			fmt.Printf("master pid %d upgraded in place from %s to %s: %d children kept, generation %d\n",
				st.PID, r.From, r.To, len(st.Children), st.Generation)
			return nil
		case st.UpgradeError != "" && st.UpgradeError != before.UpgradeError:
			return cli.Exit("upgrade: "+st.UpgradeError, exitFailure)
		}
	}
	return cli.Exit(fmt.Sprintf("upgrade: the master did not answer within %v of the exec to %s", upgradeWait, r.To), exitFailure)
}

// status returns the master's status.
func (cl *client) status() (supervisor.Status, error) {
	var st supervisor.Status
	code, body, err := cl.do(http.MethodGet, "/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status: %d %s", code, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, errors.New("status: " + err.Error())
	}
	return st, nil
}

// processLives reports whether pid is a process that has not exited (a
// zombie has).
func processLives(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}
