package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// StopMode says how the children are stopped.
type StopMode int

const (
	// StopGraceful drains every child: SIGTERM, then SIGKILL after the drain
	// timeout.
	StopGraceful StopMode = iota + 1
	// StopFast kills every child with SIGKILL at once.
	StopFast
)

// ErrNotRunning is returned by requests made after Run has returned.
var ErrNotRunning = errors.New("supervisor is not running")

// Supervisor runs and watches the children. Create it with New, then call
// Run once.
type Supervisor struct {
	cfg     Config
	argv    []string // cfg.Command with its program resolved to a path
	log     *slog.Logger
	notify  *notifyServer
	devnull *os.File

	events chan any      // everything the loop acts on
	quit   chan struct{} // closed when Run's loop has ended

	// Owned by the loop goroutine alone.
	spawner    *spawner
	children   map[int]*child // by pid; only unreaped processes
	slots      []*slot
	generation int
	stopping   StopMode // 0 while running
}

// child is one process the supervisor started and has not reaped yet.
type child struct {
	pid        int
	slot       int
	generation int
	state      State
	started    time.Time
	readyAt    time.Time
	readyTimer *time.Timer
	killTimer  *time.Timer
	notReady   bool // killed for not being ready in time
}

// slot is a position 0..Workers-1 that outlives its children.
type slot struct {
	current  *child // nil while a restart is pending
	failures int    // unplanned exits in a row, for the backoff
	restarts int
	timer    *time.Timer // a pending restart
}

// Events the loop receives (besides exitStatus from the reaper).
type (
	notified struct {
		pid int
		msg notification
	}
	readyTimeout  struct{ c *child }
	drainTimeout  struct{ c *child }
	restartDue    struct{ slot int }
	stopRequest   struct{ mode StopMode }
	statusRequest struct{ reply chan Status }
)

// New checks cfg and prepares what the children will need, without starting
// any: every error here is the operator's to fix, reported before anything
// runs.
func New(cfg Config, log *slog.Logger) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	if err := sockopt.CheckFree(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := closeOnExecAll(); err != nil {
		return nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	ns, err := listenNotify()
	if err != nil {
		devnull.Close()
		return nil, err
	}
	return &Supervisor{
		cfg:        cfg,
		argv:       append([]string{path}, cfg.Command[1:]...),
		log:        log,
		notify:     ns,
		devnull:    devnull,
		events:     make(chan any, 64),
		quit:       make(chan struct{}),
		children:   make(map[int]*child),
		generation: 1,
	}, nil
}

// Run starts the children and supervises them until a stop, requested by
// Stop or by cancelling ctx (a graceful stop), has ended with every child
// reaped. It returns nil then.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.devnull.Close()
	stopReaper := make(chan struct{})
	reaperDone := reaper(func(e exitStatus) { s.send(e) }, stopReaper)
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		s.readNotify()
	}()
	s.spawner = startSpawner(s.devnull)
	s.warnMigrateReq()

	s.slots = make([]*slot, s.cfg.Workers)
	for i := range s.slots {
		s.slots[i] = &slot{}
		s.startChild(i)
	}
	s.loop(ctx)

	close(s.quit)
	close(stopReaper)
	<-reaperDone
	s.spawner.stop()
	s.notify.close()
	<-notifyDone
	return nil
}

func (s *Supervisor) loop(ctx context.Context) {
	done := ctx.Done()
	for s.stopping == 0 || len(s.children) > 0 {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-done:
			done = nil
			s.stop(StopGraceful)
		}
	}
}

func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case exitStatus:
		s.exited(ev)
	case notified:
		s.notified(ev.pid, ev.msg)
	case readyTimeout:
		s.readyTimedOut(ev.c)
	case drainTimeout:
		s.drainTimedOut(ev.c)
	case restartDue:
		s.restartDue(ev.slot)
	case stopRequest:
		s.stop(ev.mode)
	case statusRequest:
		ev.reply <- s.status()
	}
}

// send delivers an event to the loop, or drops it once the loop is gone.
func (s *Supervisor) send(ev any) {
	select {
	case s.events <- ev:
	case <-s.quit:
	}
}

// Stop asks for a stop; it returns at once. A graceful stop can be
// escalated to a fast one.
func (s *Supervisor) Stop(mode StopMode) { s.send(stopRequest{mode: mode}) }

// Status returns a snapshot of the children, sorted by slot.
func (s *Supervisor) Status() (Status, error) {
	reply := make(chan Status, 1)
	select {
	case s.events <- statusRequest{reply: reply}:
	case <-s.quit:
		return Status{}, ErrNotRunning
	}
	select {
	case st := <-reply:
		return st, nil
	case <-s.quit:
		return Status{}, ErrNotRunning
	}
}

func (s *Supervisor) status() Status {
	st := Status{
		PID:        os.Getpid(),
		Generation: s.generation,
		Workers:    s.cfg.Workers,
		Sockets:    s.cfg.Sockets,
	}
	for _, c := range s.children {
		st.Children = append(st.Children, ChildStatus{
			Slot:       c.slot,
			Generation: c.generation,
			PID:        c.pid,
			State:      c.state,
			Started:    c.started,
			Restarts:   s.slots[c.slot].restarts,
		})
	}
	slices.SortFunc(st.Children, func(a, b ChildStatus) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.Generation - b.Generation
	})
	return st
}

func (s *Supervisor) startChild(slotIndex int) {
	sl := s.slots[slotIndex]
	env := childEnv(os.Environ(), map[string]string{
		"PREFORK_LISTEN":        s.cfg.Listen,
		"PREFORK_SLOT":          strconv.Itoa(slotIndex),
		"PREFORK_GENERATION":    strconv.Itoa(s.generation),
		"PREFORK_WORKERS":       strconv.Itoa(s.cfg.Workers),
		"PREFORK_DRAIN_TIMEOUT": s.cfg.DrainTimeout.String(),
		"NOTIFY_SOCKET":         s.notify.addr,
	})
	now := time.Now()
	pid, err := s.spawner.spawn(s.argv, env)
	if err != nil {
		s.log.Error("child failed to start", "slot", slotIndex, "generation", s.generation, "err", err)
		sl.failures++
		s.scheduleRestart(slotIndex)
		return
	}
	c := &child{pid: pid, slot: slotIndex, generation: s.generation, state: StateStarting, started: now}
	c.readyTimer = time.AfterFunc(s.cfg.ReadyTimeout, func() { s.send(readyTimeout{c: c}) })
	s.children[pid] = c
	sl.current = c
	s.log.Info("child started", "slot", slotIndex, "generation", c.generation, "pid", pid)
}

// live reports whether c is still a process of the table (its pid may
// since have been reused by another child).
func (s *Supervisor) live(c *child) bool { return s.children[c.pid] == c }

func (s *Supervisor) notified(pid int, msg notification) {
	c := s.childOf(pid)
	if c == nil {
		s.log.Debug("notify message from a process outside the group", "pid", pid)
		return
	}
	if msg.Ready && c.state == StateStarting {
		c.state = StateReady
		c.readyAt = time.Now()
		c.readyTimer.Stop()
		s.log.Info("child ready", "slot", c.slot, "generation", c.generation, "pid", c.pid,
			"after", c.readyAt.Sub(c.started).Round(time.Microsecond).String())
	}
}

// childOf returns the child that pid is, or descends from: a child may
// hand the notify socket to a process of its own, as systemd's
// NotifyAccess=all allows.
func (s *Supervisor) childOf(pid int) *child {
	for range 8 {
		if c, ok := s.children[pid]; ok {
			return c
		}
		ppid, err := parentPID(pid)
		if err != nil || ppid <= 1 {
			return nil
		}
		pid = ppid
	}
	return nil
}

func (s *Supervisor) readyTimedOut(c *child) {
	if !s.live(c) || c.state != StateStarting {
		return
	}
	s.log.Error("child not ready in time; killing it", "slot", c.slot, "generation", c.generation,
		"pid", c.pid, "ready_timeout", s.cfg.ReadyTimeout.String())
	c.notReady = true
	s.kill(c, unix.SIGKILL)
}

func (s *Supervisor) drainTimedOut(c *child) {
	if !s.live(c) {
		return
	}
	s.log.Warn("child still draining at the drain timeout; killing it", "slot", c.slot,
		"generation", c.generation, "pid", c.pid, "drain_timeout", s.cfg.DrainTimeout.String())
	s.kill(c, unix.SIGKILL)
}

func (s *Supervisor) exited(e exitStatus) {
	c, ok := s.children[e.pid]
	if !ok {
		// An orphan the kernel re-parented to us (we are PID 1 or a
		// subreaper): reaping it is all there is to do.
		s.log.Debug("reaped a process outside the group", "pid", e.pid)
		return
	}
	delete(s.children, e.pid)
	c.readyTimer.Stop()
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	sl := s.slots[c.slot]
	if sl.current == c {
		sl.current = nil
	}
	attrs := []any{"slot", c.slot, "generation", c.generation, "pid", c.pid,
		"lived", e.at.Sub(c.started).Round(time.Millisecond).String()}
	attrs = append(attrs, exitAttrs(e.status)...)
	if c.state == StateDraining || s.stopping != 0 {
		s.log.Info("child exited", attrs...)
		return
	}
	if c.notReady {
		attrs = append(attrs, "reason", "not ready in time")
	}
	s.log.Warn("child exited unexpectedly", attrs...)
	sl.failures = failuresAfterExit(sl.failures, c.readyAt, e.at)
	sl.restarts++
	s.scheduleRestart(c.slot)
}

func exitAttrs(ws unix.WaitStatus) []any {
	switch {
	case ws.Exited():
		return []any{"code", ws.ExitStatus()}
	case ws.Signaled():
		return []any{"signal", unix.SignalName(ws.Signal())}
	}
	return []any{"status", int(ws)}
}

func (s *Supervisor) scheduleRestart(slotIndex int) {
	if s.stopping != 0 {
		return
	}
	sl := s.slots[slotIndex]
	delay := restartDelay(sl.failures)
	s.log.Info("restarting slot", "slot", slotIndex, "in", delay.String(), "failures_in_a_row", sl.failures)
	if delay == 0 {
		s.startChild(slotIndex)
		return
	}
	sl.timer = time.AfterFunc(delay, func() { s.send(restartDue{slot: slotIndex}) })
}

func (s *Supervisor) restartDue(slotIndex int) {
	sl := s.slots[slotIndex]
	sl.timer = nil
	if s.stopping != 0 || sl.current != nil {
		return
	}
	s.startChild(slotIndex)
}

func (s *Supervisor) stop(mode StopMode) {
	if s.stopping >= mode {
		return
	}
	s.stopping = mode
	s.log.Info("stopping", "mode", map[StopMode]string{StopGraceful: "graceful", StopFast: "fast"}[mode],
		"children", len(s.children))
	for _, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
	}
	for _, c := range s.children {
		if mode == StopFast {
			s.kill(c, unix.SIGKILL)
		} else {
			s.drain(c)
		}
	}
}

// drain tells c to finish what it has and exit, and arms the SIGKILL that
// follows at the drain timeout.
func (s *Supervisor) drain(c *child) {
	if c.state == StateDraining {
		return
	}
	c.state = StateDraining
	c.readyTimer.Stop()
	s.kill(c, unix.SIGTERM)
	c.killTimer = time.AfterFunc(s.cfg.DrainTimeout, func() { s.send(drainTimeout{c: c}) })
}

// kill signals c. Only the loop reaps, and it removes a child from the table
// as it does, so c.pid cannot name another process here.
func (s *Supervisor) kill(c *child, sig unix.Signal) {
	if err := unix.Kill(c.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Error("signal child", "pid", c.pid, "signal", unix.SignalName(sig), "err", err)
	}
}

func (s *Supervisor) readNotify() {
	buf := make([]byte, notifyMaxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		pid, data, err := s.notify.read(buf, oob)
		if err != nil {
			return // closed by Run
		}
		s.send(notified{pid: pid, msg: parseNotify(data)})
	}
}

func (s *Supervisor) warnMigrateReq() {
	if s.cfg.Sockets != SocketsChild {
		return
	}
	on, err := sockopt.MigrateReq()
	if err != nil {
		s.log.Warn("cannot read net.ipv4.tcp_migrate_req", "err", err)
		return
	}
	if !on {
		s.log.Warn("net.ipv4.tcp_migrate_req is 0: connections queued on a child's listener are reset when that child exits; fix with: sysctl -w net.ipv4.tcp_migrate_req=1")
	}
}
