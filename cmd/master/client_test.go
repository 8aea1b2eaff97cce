package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

// The flags of master reload become the query of POST /reload, only those
// given; an obvious mistake is refused, in the flag's name, before
// anything is sent.
// Not parallel: urfave/cli writes package variables (its help flag) in
// every Run.
func TestReloadQuery(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "none", want: ""},
		{name: "strategy", args: []string{"--strategy", "rolling"}, want: "?strategy=rolling"},
		{name: "all", args: []string{"--strategy", "generation", "--max-surge", "2", "--canary", "1", "--canary-for", "45s"},
			want: "?canary=1&canary_for=45s&max_surge=2&strategy=generation"},
		{name: "canary 0 is sent", args: []string{"--canary", "0"}, want: "?canary=0"},
		{name: "equals form", args: []string{"--canary-for=1m30s"}, want: "?canary_for=1m30s"},
		{name: "strategy unknown", args: []string{"--strategy", "blue"}, wantErr: `--strategy: "blue" is not generation or rolling`},
		{name: "strategy empty", args: []string{"--strategy", ""}, wantErr: `--strategy: "" is not generation or rolling`},
		{name: "max surge 0", args: []string{"--max-surge", "0"}, wantErr: "--max-surge: 0 must be at least 1"},
		{name: "max surge word", args: []string{"--max-surge", "two"}, wantErr: `--max-surge: "two" is not a whole number`},
		{name: "max surge over the cap", args: []string{"--max-surge", "100000"}, wantErr: "--max-surge: 100000 is out of range 1.."},
		{name: "canary negative", args: []string{"--canary", "-1"}, wantErr: "--canary: -1 is out of range 0.."},
		{name: "canary hex", args: []string{"--canary", "0x2"}, wantErr: `--canary: "0x2" is not a whole number`},
		{name: "canary for no unit", args: []string{"--canary-for", "30"}, wantErr: `--canary-for: "30" is not a duration`},
		{name: "canary for negative", args: []string{"--canary-for", "-1s"}, wantErr: "--canary-for: -1s must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			var err error
			cmd := reloadCommand()
			cmd.Action = func(c *cli.Context) error {
				got, err = reloadQuery(c)
				return nil
			}
			app := &cli.App{Name: "master", Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
			if runErr := app.Run(append([]string{"master", "reload"}, tt.args...)); runErr != nil {
				t.Fatal(runErr)
			}
			switch {
			case tt.wantErr == "" && (err != nil || got != tt.want):
				t.Errorf("reload %q: query %q, %v; want %q", tt.args, got, err, tt.want)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Errorf("reload %q: query %q, %v; want the error %q...", tt.args, got, err, tt.wantErr)
			}
		})
	}
}

// fakeMaster serves the admin API's POST /reload on a control socket,
// answering code and body, and keeps the queries it was sent.
type fakeMaster struct {
	path    string
	mu      sync.Mutex
	queries []string
}

func newFakeMaster(t *testing.T, code int, body string) *fakeMaster {
	t.Helper()
	m := &fakeMaster{path: filepath.Join(t.TempDir(), "prefork.sock")}
	ln, err := net.Listen("unix", m.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/reload" {
			http.NotFound(w, r)
			return
		}
		m.mu.Lock()
		m.queries = append(m.queries, r.URL.RawQuery)
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintln(w, body)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return m
}

func (m *fakeMaster) sent() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.queries...)
}

// runApp runs the master command line and returns its exit code, its
// output and its error.
func runApp(args ...string) (int, string, error) {
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	err := app.Run(append([]string{"master"}, args...))
	code := 0
	if err != nil {
		code = exitFailure
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
	}
	return code, out.String(), err
}

// master reload sends its flags as the query and reports the answer as
// before: exit 0 with the generation, 1 with the master's reason, 2 for
// a flag refused before anything was sent.
// Not parallel, as TestReloadQuery.
func TestReloadCommand(t *testing.T) {
	ok := newFakeMaster(t, http.StatusOK, `{"generation":5}`)
	code, out, err := runApp("reload", "--control", ok.path, "--strategy", "rolling", "--max-surge", "2")
	if code != 0 || out != "generation 5 serves\n" {
		t.Errorf("reload = %d %q %v, want 0 and the generation", code, out, err)
	}
	code, out, err = runApp("reload", "--control", ok.path)
	if code != 0 || out != "generation 5 serves\n" {
		t.Errorf("reload with no flags = %d %q %v", code, out, err)
	}
	if got := ok.sent(); len(got) != 2 || got[0] != "max_surge=2&strategy=rolling" || got[1] != "" {
		t.Errorf("the master was sent the queries %q", got)
	}

	code, _, err = runApp("reload", "--control", ok.path, "--max-surge", "0")
	if code != exitBadInput || err == nil || err.Error() != "reload: --max-surge: 0 must be at least 1" {
		t.Errorf("reload --max-surge 0 = %d %v, want %d and the flag named", code, err, exitBadInput)
	}
	if n := len(ok.sent()); n != 2 {
		t.Errorf("a refused flag was sent: %d requests", n)
	}

	refused := newFakeMaster(t, http.StatusBadRequest, `{"generation":0,"error":"canary: 9999 is out of range 0..4096"}`)
	code, out, err = runApp("reload", "--control", refused.path, "--canary", "3")
	if code != exitFailure || out != "" || err == nil || err.Error() != "canary: 9999 is out of range 0..4096" {
		t.Errorf("reload refused by the master = %d %q %v, want %d and its reason", code, out, err, exitFailure)
	}
	rolledBack := newFakeMaster(t, http.StatusInternalServerError,
		`{"generation":4,"error":"reload rolled back: slot 3 pid 1234: exited with code 1"}`)
	code, _, err = runApp("reload", "--control", rolledBack.path, "--canary", "1", "--canary-for", "10s")
	if code != exitFailure || err == nil || !strings.Contains(err.Error(), "slot 3 pid 1234") {
		t.Errorf("reload rolled back = %d %v", code, err)
	}
	if got := rolledBack.sent(); len(got) != 1 || got[0] != "canary=1&canary_for=10s" {
		t.Errorf("the master was sent the queries %q", got)
	}
}

// master status shows the reload in progress in one line, and none when
// there is none.
func TestStatusShowsReload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		reload *supervisor.ReloadStatus
		want   string // the line, "" for none
	}{
		{name: "none"},
		{name: "loading", reload: &supervisor.ReloadStatus{Phase: "loading", ElapsedSeconds: 0.04},
			want: "reload: loading, 0s elapsed"},
		{name: "rolling", reload: &supervisor.ReloadStatus{Strategy: "rolling", Phase: "rolling", Generation: 5, Slots: 8,
			SlotsDone: 3, ElapsedSeconds: 41.23},
			want: "reload: rolling, 3/8 slots done, generation 5, strategy rolling, 41.2s elapsed"},
		{name: "canary", reload: &supervisor.ReloadStatus{Strategy: "generation", Phase: "canary", Generation: 2, Slots: 8,
			SlotsDone: 1, Canary: 1, CanaryLeftSeconds: 12.5, ElapsedSeconds: 17.5},
			want: "reload: canary, 1/8 slots done, generation 2, strategy generation, canary 1 with 12.5s of watch left, 17.5s elapsed"},
		{name: "after the canary", reload: &supervisor.ReloadStatus{Strategy: "rolling", Phase: "rolling", Generation: 2, Slots: 8,
			SlotsDone: 4, Canary: 2, ElapsedSeconds: 95},
			want: "reload: rolling, 4/8 slots done, generation 2, strategy rolling, canary 2, 1m35s elapsed"},
		{name: "rolling back", reload: &supervisor.ReloadStatus{Strategy: "rolling", Phase: "rolling_back", Generation: 3, Slots: 4,
			SlotsDone: 2, ElapsedSeconds: 6},
			want: "reload: rolling_back, 2/4 slots done, generation 3, strategy rolling, 6s elapsed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := supervisor.Status{PID: 7, Version: "v1", Generation: 1, Workers: 8, Sockets: "child", Ready: "notify",
				Reload: tt.reload, Children: []supervisor.ChildStatus{{Slot: 0, Generation: 1, PID: 70, State: supervisor.StateReady}}}
			var out bytes.Buffer
			printStatus(&out, st)
			lines := strings.Split(out.String(), "\n")
			if !strings.HasPrefix(lines[0], "master pid 7,") {
				t.Fatalf("status:\n%s", out.String())
			}
			got, table := "", lines[1]
			if strings.HasPrefix(lines[1], "reload") {
				got, table = lines[1], lines[2]
			}
			if got != tt.want || !strings.HasPrefix(table, "SLOT") {
				t.Errorf("the reload line = %q, want %q; status:\n%s", got, tt.want, out.String())
			}
		})
	}
}

// master status names the listeners, and has a DATAGRAMS column where
// one of them is UDP (only there: the table stays as it was elsewhere).
func TestStatusShowsListeners(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		listen     []string
		wantHeader string
		wantRow    string
	}{
		{listen: []string{"default=127.0.0.1:8080"},
			wantHeader: "SLOT  GEN  PID  STATE  ACCEPTS  RESTARTS", wantRow: "0     1    70   ready  5        0"},
		{listen: []string{"http=127.0.0.1:8080", "dns=udp://127.0.0.1:5353"},
			wantHeader: "SLOT  GEN  PID  STATE  ACCEPTS  DATAGRAMS  RESTARTS", wantRow: "0     1    70   ready  5        9          0"},
	} {
		st := supervisor.Status{PID: 7, Version: "v1", Generation: 1, Workers: 1, Sockets: "master", Ready: "notify", Listen: tt.listen,
			Children: []supervisor.ChildStatus{{Slot: 0, Generation: 1, PID: 70, State: supervisor.StateReady, Accepts: 5, Datagrams: 9}}}
		var out bytes.Buffer
		printStatus(&out, st)
		lines := strings.Split(out.String(), "\n")
		if len(lines) < 4 || lines[1] != "listen "+strings.Join(tt.listen, ", ") ||
			!strings.HasPrefix(lines[2], tt.wantHeader) || !strings.HasPrefix(lines[3], tt.wantRow) {
			t.Errorf("status with listeners %v:\n%s\nwant the listen line, %q and %q", tt.listen, out.String(), tt.wantHeader, tt.wantRow)
		}
	}
}
