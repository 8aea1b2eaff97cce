package supervisor

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Under --ready listen a child is ready once it is seen waiting for
// connections, not before; the watch asks for the address in child
// socket mode.
func TestReadyListen(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Ready = Readiness{Mode: ReadyListen}
	h := newHarness(t, cfg)
	a, b := h.child(0, 1), h.child(1, 1)
	h.wantStates("0/1:starting", "1/1:starting")
	h.observe.seeWaiting(a.pid)
	h.waitFor("slot 0 ready", func() bool { return slices.Equal(h.states(), []string{"0/1:ready", "1/1:starting"}) })
	h.waitFor("the watch of slot 1", func() bool { _, ok := h.observe.watch(b.pid); return ok })
	if w, _ := h.observe.watch(b.pid); w.listen != cfg.Listen[0] || w.fd != -1 {
		t.Errorf("watch of slot 1 = %+v; want the address %s and no fd", w, cfg.Listen)
	}
	h.observe.seeWaiting(b.pid)
	h.waitFor("both ready", func() bool { return slices.Equal(h.states(), []string{"0/1:ready", "1/1:ready"}) })
	if got := h.logs.lines("child ready"); len(got) != 2 || attr(got[0], "by").String() != ReadyListen {
		t.Errorf("ready lines = %v, want 2 by listen", got)
	}
	if st := h.status(); st.Ready != "listen" {
		t.Errorf("status ready = %q", st.Ready)
	}
}

// A READY=1 makes a child ready at once whatever the mode, and ends its
// watch.
func TestReadyNotifyCountsInEveryMode(t *testing.T) {
	t.Parallel()
	for _, mode := range []Readiness{{Mode: ReadyListen}, {Mode: ReadyDelay, Delay: 5 * time.Second}} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, 1)
			cfg.Ready = mode
			h := newHarness(t, cfg)
			h.ready(h.child(0, 1))
			h.wantStates("0/1:ready")
			if got := attr(h.logs.lines("child ready")[0], "by").String(); got != ReadyNotify {
				t.Errorf("ready by %q, want notify", got)
			}
		})
	}
}

// A listen-mode child never seen waiting is killed at the ready timeout,
// with the reason, and the slot's row keeps it.
func TestReadyListenTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Ready = Readiness{Mode: ReadyListen}
	h := newHarness(t, cfg)
	p := h.child(0, 1)
	h.clock.Advance(cfg.ReadyTimeout)
	if got := h.procs.signalsOf(p.pid); !slices.Equal(got, []unix.Signal{unix.SIGKILL}) {
		t.Fatalf("signals = %v, want SIGKILL", got)
	}
	lines := h.logs.lines("child not ready in time")
	if len(lines) != 1 || !strings.Contains(attr(lines[0], "hint").String(), "no process of it listens on "+cfg.Listen[0].Addr) {
		t.Fatalf("not-ready lines = %v", lines)
	}
	// The first failure restarts at once; the new child's row keeps the
	// slot's note until a child of the slot is ready.
	st := h.status()
	if len(st.Children) != 1 || !strings.Contains(st.Children[0].Note, "listens on") {
		t.Errorf("status = %+v, want the row with the note", st.Children)
	}
	h.ready(h.newest(0))
	if st := h.status(); st.Children[0].Note != "" {
		t.Errorf("note %q kept after a child of the slot got ready", st.Children[0].Note)
	}
}

// Under --ready delay:D a child alive after D is ready; one that exits
// before is a crash.
func TestReadyDelay(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Ready = Readiness{Mode: ReadyDelay, Delay: 2 * time.Second}
	h := newHarness(t, cfg)
	h.clock.Advance(time.Second)
	crashed := h.child(1, 1)
	h.exit(crashed, exitCode(1)) // restarted at once: its successor starts now
	h.clock.Advance(time.Second - time.Millisecond)
	h.wantStates("0/1:starting", "1/1:starting")
	h.clock.Advance(time.Millisecond)
	h.wantStates("0/1:ready", "1/1:starting")
	h.clock.Advance(time.Second)
	h.wantStates("0/1:ready", "1/1:ready")
	for _, r := range h.logs.lines("child ready") {
		if attr(r, "by").String() != "delay" || attr(r, "pid").Int64() == int64(crashed.pid) {
			t.Errorf("ready line %v", r)
		}
	}
}

// In master socket mode the watch looks for the child waiting on the fd
// it was given. A child that said READY=1 but never waits on it is
// reported at the ready timeout (it serves nothing), but kept; one that
// is not ready is killed with the same hint.
func TestMasterModeNotWaitingOnSocket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	h := newHarness(t, cfg)
	a, b := h.child(0, 1), h.child(1, 1)
	h.waitFor("the watch of slot 0", func() bool { _, ok := h.observe.watch(a.pid); return ok })
	if w, _ := h.observe.watch(a.pid); w.fd < 0 {
		t.Fatalf("watch = %+v; want the slot's fd", w)
	}
	h.ready(a)
	h.clock.Advance(cfg.ReadyTimeout)
	warn := h.logs.lines("ready child does not wait on the socket it was given")
	if len(warn) != 1 || !strings.Contains(attr(warn[0], "hint").String(), "LISTEN_FDS") {
		t.Fatalf("warnings = %v", warn)
	}
	if got := h.procs.signalsOf(a.pid); len(got) != 0 {
		t.Errorf("the ready child got %v; it is kept", got)
	}
	late := h.logs.lines("child not ready in time")
	if len(late) != 1 || !strings.Contains(attr(late[0], "hint").String(), "fd 3") {
		t.Errorf("not-ready lines = %v", late)
	}
	if got := h.procs.signalsOf(b.pid); !slices.Equal(got, []unix.Signal{unix.SIGKILL}) {
		t.Errorf("the unready child got %v, want SIGKILL", got)
	}
	if st := h.status(); !strings.Contains(st.Children[0].Note, "LISTEN_FDS") {
		t.Errorf("slot 0's row = %+v, want the note", st.Children[0])
	}

	// The next child waits on its socket: no warning, and the slot's
	// note is gone.
	h.clock.Advance(restartDelay(1))
	next := h.newest(1)
	h.seeWaiting(next)
	h.ready(next)
	if st := h.status(); st.Children[1].Note != "" {
		t.Errorf("slot 1's note %q kept once its child serves its socket", st.Children[1].Note)
	}
	h.clock.Advance(cfg.ReadyTimeout)
	if got := h.logs.count("ready child does not wait"); got != 1 {
		t.Errorf("%d warnings, want still 1", got)
	}
}

// A watch that cannot read the kernel says so, once, and the child is
// left to its ready timeout.
func TestWatchFailure(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Ready = Readiness{Mode: ReadyListen}
	h := newHarness(t, cfg)
	h.observe.mu.Lock()
	h.observe.broken = errors.New("permission denied")
	h.observe.mu.Unlock()
	h.exit(h.child(0, 1), exitCode(1)) // its successor's watch fails
	h.waitFor("the warning", func() bool { return h.logs.count("cannot watch a child's processes") == 1 })
	if err := attr(h.logs.lines("cannot watch")[0], "err").String(); err != "permission denied" {
		t.Errorf("err = %q", err)
	}
	h.wantStates("0/1:starting")
}

// A child-mode child that exits before it is ready while the address is
// held without SO_REUSEPORT gets the diagnosis once per crash loop, in the
// log and the slot's row.
func TestAddressInUseDiagnosis(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	h := newHarness(t, cfg)
	holder := h.child(0, 1)
	h.observe.blockAddress(holder.pid)
	h.exit(h.child(1, 1), exitCode(1))
	h.waitFor("the diagnosis", func() bool { return h.logs.count("slot cannot bind its address") == 1 })
	hint := attr(h.logs.lines("slot cannot bind its address")[0], "hint").String()
	for _, want := range []string{"slot 0", "SO_REUSEPORT", "--sockets master"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q lacks %q", hint, want)
		}
	}
	h.clock.Advance(restartDelay(1))
	h.exit(h.newest(1), exitCode(1))
	h.waitFor("the second diagnosis", func() bool { return h.logs.count("slot cannot bind its address, again") == 1 })
	if got := h.logs.count("slot cannot bind its address") - 1; got != 1 {
		t.Errorf("%d diagnosis lines, want 1 for the whole crash loop", got)
	}
	var row ChildStatus
	for _, c := range h.status().Children {
		if c.Slot == 1 {
			row = c
		}
	}
	if row.State != StateBackoff || row.Note != hint || !strings.Contains(row.LastExit, "exited with code 1") || row.RetryInSeconds <= 0 {
		t.Errorf("slot 1's row = %+v", row)
	}
	// A ready child never triggers the probe; nor does a planned exit
	// (the starting children a stop drains).
	h.ready(holder)
	h.exit(holder, exitCode(1))
	h.s.Stop(StopGraceful)
	h.wait()
	h.observe.mu.Lock()
	defer h.observe.mu.Unlock()
	if h.observe.probes != 2 {
		t.Errorf("%d probes, want 2 (neither a ready child's crash nor a drain is a bind failure)", h.observe.probes)
	}
}

// Placeholders in the arguments and the env map are filled per child,
// and a reload applies a new env.
func TestTemplatesAndEnv(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Command = []string{"/bin/true", "--bind={listen}", "{{slot}", "{host}/{port}/{slot}/{generation}/{workers}"}
	cfg.Env = map[string]string{"PORT": "{port}", "NGINX": "3;"}
	next := cfg
	next.Env = map[string]string{"PORT": "x{slot}"}
	h := newHarness(t, cfg, loading(func() (Config, error) { return next, nil }))
	host, port, _ := strings.Cut(cfg.Listen[0].Addr, ":")
	p := h.child(1, 1)
	want := []string{"/bin/true", "--bind=" + cfg.Listen[0].Addr, "{slot}", host + "/" + port + "/1/1/2"}
	if !slices.Equal(p.spec.argv, want) {
		t.Errorf("argv = %q, want %q", p.spec.argv, want)
	}
	if p.env["PORT"] != port || p.env["NGINX"] != "3;" {
		t.Errorf("env PORT=%q NGINX=%q", p.env["PORT"], p.env["NGINX"])
	}
	h.readyAll(1)
	ch := h.reloadAsync()
	h.readyAll(2)
	if r := h.result(ch); r.Err != nil {
		t.Fatal(r.Err)
	}
	q := h.child(1, 2)
	if _, ok := q.env["NGINX"]; ok || q.env["PORT"] != "x1" {
		t.Errorf("after the reload: env %v", q.env)
	}
	if q.spec.argv[3] != host+"/"+port+"/1/2/2" {
		t.Errorf("after the reload: argv %q", q.spec.argv)
	}
}

// --stop-signal drains: on a reload and on a graceful stop.
func TestStopSignal(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.StopSignal = unix.SIGINT
	h := newHarness(t, cfg, loading(func() (Config, error) { return cfg, nil }))
	h.readyAll(1)
	old := h.child(0, 1)
	ch := h.reloadAsync()
	h.readyAll(2)
	h.result(ch)
	if got := h.procs.signalsOf(old.pid); !slices.Equal(got, []unix.Signal{unix.SIGINT}) {
		t.Errorf("reload sent %v, want SIGINT", got)
	}
	cur := h.child(0, 2)
	h.s.Stop(StopGraceful)
	h.wait()
	if got := h.procs.signalsOf(cur.pid); !slices.Equal(got, []unix.Signal{unix.SIGINT}) {
		t.Errorf("stop sent %v, want SIGINT", got)
	}
}

// Every child the loop reaps is released (its group and cgroup killed),
// whatever ended it; --child-output prefix asks for the slot's prefix.
func TestEveryExitReleased(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.ChildOutput = OutputPrefix
	h := newHarness(t, cfg)
	a, b := h.child(0, 1), h.child(1, 1)
	if !a.spec.prefix || !b.spec.prefix || a.spec.slot != 0 || b.spec.slot != 1 {
		t.Errorf("specs %+v, %+v: want their output prefixed with their slot", a.spec, b.spec)
	}
	h.ready(a)
	h.exit(a, killedBy(unix.SIGKILL)) // a crash
	h.clock.Advance(cfg.ReadyTimeout) // b is late: killed
	h.s.Stop(StopGraceful)
	h.wait()
	var want []int
	for _, p := range h.procs.started() {
		want = append(want, p.pid)
	}
	got := h.procs.released()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("released %v, want every child %v", got, want)
	}
}

// A master-mode child that exits before it is ready, never seen waiting
// on its socket, gets the hint of a server that binds the address
// itself, once per slot; one that waited on it does not.
func TestMasterModeExitBeforeTakingSocket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	h := newHarness(t, cfg)
	h.exit(h.child(0, 1), exitCode(1))
	h.exit(h.newest(0), exitCode(1))
	lines := h.logs.lines("child exited before it took its socket")
	if len(lines) != 1 || !strings.Contains(attr(lines[0], "hint").String(), "LISTEN_FDS") {
		t.Fatalf("lines = %v, want one with the hint", lines)
	}
	waited := h.child(1, 1)
	h.seeWaiting(waited)
	h.exit(waited, exitCode(1))
	if got := h.logs.count("child exited before it took its socket"); got != 1 {
		t.Errorf("%d lines, want still 1: slot 1's child waited on its socket", got)
	}
}

// Under the default --ready notify, a child that waits for connections
// but never says READY=1 (a server that does not speak sd_notify) is told
// apart at the ready timeout, and a reload's caller reads the hint.
func TestNotifyModeServerThatNeverNotifies(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg, loading(func() (Config, error) { return cfg, nil }))
	h.readyAll(1)
	ch := h.reloadAsync()
	p := h.child(0, 2)
	h.seeWaiting(p)
	h.wantStates("0/1:ready", "0/2:starting") // seen waiting is not ready under notify
	h.clock.Advance(cfg.ReadyTimeout)
	r := h.result(ch)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "--ready listen") {
		t.Errorf("reload = %v, want a rollback that says --ready listen", r.Err)
	}
	late := h.logs.lines("child not ready in time")
	if len(late) != 1 || !strings.Contains(attr(late[0], "hint").String(), "sd_notify") {
		t.Errorf("not-ready lines = %v", late)
	}
}

// seeWaiting makes p seen waiting on its socket, and returns once the loop
// has recorded it.
func (h *harness) seeWaiting(p *fakeProc) {
	h.t.Helper()
	h.observe.seeWaiting(p.pid)
	h.waitFor("child seen waiting", func() bool {
		var seen bool
		h.onLoop(func() { seen = h.s.children[p.pid] != nil && h.s.children[p.pid].seenWaiting })
		return seen
	})
}
