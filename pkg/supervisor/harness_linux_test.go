package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"golang.org/x/sys/unix"
)

// harness runs a Supervisor's loop in-process on fake processes and a
// fake clock: a scenario of crashes, reloads and timeouts runs in
// milliseconds, and every step is settled before the test looks.
type harness struct {
	t       *testing.T
	s       *Supervisor
	clock   *fakeClock
	procs   *fakeProcs
	observe *fakeObserver
	logs    *logRecorder
	systemd *recorder // what the master told its service manager
	done    chan error
	// loadsEntered and loadsReturned count the calls of Options.Load
	// that began and that returned: a read the loop started but whose
	// goroutine has not run yet, and a result on its way to the loop,
	// are what settle waits for.
	loadsEntered, loadsReturned atomic.Int64
	// execd is set once the master exec'd in place (a fake upgrade): its
	// loop is gone, and a harness of the new master goes on.
	execd atomic.Bool
}

// testConfig is a configuration the loop accepts: a command that exists
// (the fakes never run it) on a free loopback address.
func testConfig(t *testing.T, workers int) Config {
	cfg := DefaultConfig()
	cfg.Workers = workers
	cfg.Listen = tcpListen(testkit.FreeAddr(t))
	cfg.Command = []string{"/bin/true"}
	cfg.Metrics = ""
	return cfg
}

type harnessOption func(*env, *Options)

// underSystemd gives the master a service manager, with watchdog d (0:
// none).
func underSystemd(d time.Duration) harnessOption {
	return func(e *env, _ *Options) {
		e.watchdog = d
		e.notifySystemd = func(string) error { return nil } // replaced by newHarness
	}
}

// loading makes reloads read their configuration from load.
func loading(load func() (Config, error)) harnessOption {
	return func(_ *env, o *Options) { o.Load = load }
}

// newHarness starts a supervisor of cfg; t's cleanup stops it fast and
// waits for Run to return.
func newHarness(t *testing.T, cfg Config, options ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), logs: &logRecorder{}, systemd: &recorder{}, done: make(chan error, 1)}
	h.procs = newFakeProcs(h.clock)
	h.observe = newFakeObserver()
	e := env{procs: h.procs, clock: h.clock, observe: h.observe, steerSupported: func() error { return errors.New("not in tests") }}
	opts := Options{Log: slog.New(h.logs)}
	for _, o := range options {
		o(&e, &opts)
	}
	if e.notifySystemd != nil {
		e.notifySystemd = func(state string) error { h.systemd.add(state); return nil }
	}
	if load := opts.Load; load != nil {
		opts.Load = func() (Config, error) {
			h.loadsEntered.Add(1)
			defer h.loadsReturned.Add(1)
			return load()
		}
	}
	s, err := newSupervisor(cfg, opts, e)
	if err != nil {
		t.Fatalf("newSupervisor: %v", err)
	}
	h.s = s
	h.clock.settle = h.settle
	go func() { h.done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		if h.execd.Load() {
			return
		}
		s.Stop(StopFast)
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after a fast stop")
		}
	})
	h.settle()
	return h
}

// settle returns once the loop has handled every event sent before it.
func (h *harness) settle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		pending, err := ask(h.s, ctx, answer(func() uint64 { return h.s.reload.read.pending }))
		if errors.Is(err, context.DeadlineExceeded) {
			h.t.Fatalf("the loop did not answer within 10 s")
		}
		// A handler that signalled a fake child queued its SIGCHLD
		// behind this round trip, and a config read that returned is
		// on its way (reads are numbered by call), or has not begun (its
		// goroutine not scheduled yet, on a busy machine): go round again
		// until the loop has them. A read that began and has not returned
		// is a test's blocking one, left to block.
		inFlight := pending != 0 && (h.loadsReturned.Load() >= int64(pending) || h.loadsEntered.Load() < int64(pending))
		if err != nil || !h.procs.sigchldQueued() && !inFlight {
			return
		}
	}
}

// onLoop runs f on the loop, which owns the state f reads.
func (h *harness) onLoop(f func()) {
	h.t.Helper()
	if _, err := ask(h.s, context.Background(), answer(func() struct{} { f(); return struct{}{} })); err != nil {
		h.t.Fatalf("onLoop: %v", err)
	}
}

// waitFor polls cond, which must become true within 10 s; for what the
// test does not drive itself (a request sent from another goroutine).
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// wait returns Run's result; the loop must end within 10 s.
func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatalf("Run did not return")
		return nil
	}
}

// child returns the live process of slot and generation; the test fails
// when there is not exactly one.
func (h *harness) child(slot, generation int) *fakeProc {
	h.t.Helper()
	var found []*fakeProc
	for _, p := range h.procs.live() {
		if p.slot() == slot && p.generation() == generation {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("%d live children of slot %d generation %d, want 1", len(found), slot, generation)
	}
	return found[0]
}

// newest returns the live process of slot started last.
func (h *harness) newest(slot int) *fakeProc {
	h.t.Helper()
	live := h.procs.live()
	for i := len(live) - 1; i >= 0; i-- {
		if live[i].slot() == slot {
			return live[i]
		}
	}
	h.t.Fatalf("no live child in slot %d", slot)
	return nil
}

// notify delivers an sd_notify message from p, as the notify reader would.
func (h *harness) notify(p *fakeProc, msg notification) {
	h.s.send(notified{pid: p.pid, msg: msg, at: h.clock.Now()})
	h.settle()
}

func (h *harness) ready(ps ...*fakeProc) {
	for _, p := range ps {
		h.notify(p, notification{Ready: true})
	}
}

// readyAll makes every live starting child of generation g ready.
func (h *harness) readyAll(g int) {
	for _, p := range h.procs.live() {
		if p.generation() == g {
			h.ready(p)
		}
	}
}

// exit makes p end with ws, as if it crashed or returned.
func (h *harness) exit(p *fakeProc, ws unix.WaitStatus) {
	h.procs.end(p.pid, ws)
	h.settle()
}

func (h *harness) status() Status {
	h.t.Helper()
	st, err := h.s.Status()
	if err != nil {
		h.t.Fatalf("Status: %v", err)
	}
	return st
}

// states returns "slot/generation:state" for every child, sorted.
func (h *harness) states() []string {
	var out []string
	for _, c := range h.status().Children {
		out = append(out, fmt.Sprintf("%d/%d:%s", c.Slot, c.Generation, c.State))
	}
	return out
}

func (h *harness) wantStates(want ...string) {
	h.t.Helper()
	if got := h.states(); !slices.Equal(got, want) {
		h.t.Errorf("children = %v, want %v", got, want)
	}
}

// reloadAsync starts a reload whose result arrives on the channel.
func (h *harness) reloadAsync() <-chan ReloadResult {
	h.t.Helper()
	return h.reloadAsyncWith(ReloadOptions{})
}

// reloadAsyncWith is reloadAsync with one reload's options.
func (h *harness) reloadAsyncWith(o ReloadOptions) <-chan ReloadResult {
	h.t.Helper()
	out := make(chan ReloadResult, 1)
	seen := h.logs.count("reload requested")
	go func() { out <- h.s.ReloadWith(context.Background(), o) }()
	// Wait until the request is in the loop: the reload then has begun
	// or been queued, or it was answered at once.
	deadline := time.Now().Add(10 * time.Second)
	for h.logs.count("reload requested") == seen && len(out) == 0 {
		if time.Now().After(deadline) {
			h.t.Fatalf("the reload request never reached the loop")
		}
		time.Sleep(time.Millisecond)
	}
	h.settle()
	return out
}

// result waits for a reload's result.
func (h *harness) result(ch <-chan ReloadResult) ReloadResult {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no reload result")
		return ReloadResult{}
	}
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// lines returns the records whose message starts with msg.
func (l *logRecorder) lines(msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.records {
		if strings.HasPrefix(r.Message, msg) {
			out = append(out, r)
		}
	}
	return out
}

func (l *logRecorder) count(msg string) int { return len(l.lines(msg)) }

// attr returns the value of key in r.
func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// recorder keeps strings in order.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// wantReloads checks the count of reload outcomes result by strategy.
func (h *harness) wantReloads(result, strategy string, n uint64) {
	h.t.Helper()
	snap, err := h.s.Snapshot()
	if err != nil {
		h.t.Fatalf("Snapshot: %v", err)
	}
	if got := snap.Reloads[reloadKey(result, strategy)]; got != n {
		h.t.Errorf("%s reloads by the %s strategy: %d, want %d (all: %v)", result, strategy, got, n, snap.Reloads)
	}
}
