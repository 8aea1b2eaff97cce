package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prefork/prefork/pkg/counters"
	"github.com/prefork/prefork/pkg/metrics"
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

// Errors of requests to a supervisor.
var (
	// ErrNotRunning is returned by requests made after Run has returned.
	ErrNotRunning = errors.New("supervisor is not running")
	// ErrStopping is returned for a reload asked for, or cut short, by a stop.
	ErrStopping = errors.New("supervisor is stopping")
	// ErrReloadRejected wraps the reason a new configuration was refused;
	// nothing changed.
	ErrReloadRejected = errors.New("reload rejected")
	// ErrRolledBack wraps the reason a new generation failed to get ready;
	// it was killed and the old one serves on.
	ErrRolledBack = errors.New("reload rolled back")
	// ErrDrainCut is returned by Run when a graceful stop had to kill a
	// child at the drain timeout: the stop is done, but work was cut.
	ErrDrainCut = errors.New("stopped, but the drain timeout cut a child short")
)

// Options are the parts of a supervisor that are not configuration.
type Options struct {
	// Log receives the supervisor's log lines; nil discards them.
	Log *slog.Logger
	// Load returns the configuration for a reload: the config file re-read
	// with flags still winning. Nil reloads with the configuration the
	// supervisor was created with.
	Load func() (Config, error)
}

// Supervisor runs and watches the children. Create it with New, then call
// Run once.
type Supervisor struct {
	opts    Options
	log     *slog.Logger
	notify  *notifyServer
	control net.Listener // the admin API's socket; nil when off
	metrics net.Listener // the metrics endpoint's socket; nil when off
	devnull *os.File
	self    string // the master's executable, the exec shim of master socket mode
	systemd bool   // the master itself was started with NOTIFY_SOCKET

	events chan any      // everything the loop acts on
	quit   chan struct{} // closed when Run's loop has ended

	// Owned by the loop goroutine alone.
	spawner     *spawner
	children    map[int]*child // by pid; only unreaped processes
	cur         *generation    // the serving generation
	next        *generation    // the generation a reload is starting, or nil
	reload      reloadState
	reloadStart time.Time
	reloadErr   error               // why the running reload failed
	waiters     []chan ReloadResult // callers of the running reload
	queued      []chan ReloadResult // callers of the reload queued after it
	restarts    map[int]int         // unplanned exits restarted, by slot
	accepted    map[int]uint64      // accepts of the slot's children that are gone
	slotsEver   int                 // the most slots any generation had
	reloads     map[string]uint64   // reload outcomes, by result
	reloadHist  metrics.HistogramSnapshot
	sockets     *socketSet // master socket mode's listeners
	announced   bool       // READY=1 sent to systemd
	stopping    StopMode   // 0 while running
	drainCut    bool       // a child was killed at the drain timeout

	watchdogKills map[int]uint64        // by slot
	recycles      map[recycleKey]uint64 // completed recycles
	upkeep        *time.Ticker          // recycling checks; nil when off
	upkeepTicks   int
	steering      *steering
}

// generation is one set of children started from one configuration.
type generation struct {
	number int
	cfg    Config
	argv   []string  // cfg.Command with its program resolved to a path
	id     *identity // who the children run as; nil: as the master
	slots  []*slot
}

// child is one process the supervisor started and has not reaped yet.
type child struct {
	pid        int
	gen        *generation
	slot       int
	state      State
	started    time.Time
	readyAt    time.Time
	readyTimer *time.Timer
	killTimer  *time.Timer
	notReady   bool           // killed for not being ready in time
	page       *counters.Page // its accept counter; nil if none could be made

	// The watchdog, armed by the child's first WATCHDOG=1.
	watchdogTimer  *time.Timer
	lastPing       time.Time
	watchdogKilled bool // sent SIGQUIT for missing its pings
	stallGraced    bool // its last expiry was excused as the master's stall

	acceptLimit uint64 // recycle past this many accepts; 0: never
	recycling   string // why a successor is starting for it, or ""
}

// slot is a position 0..Workers-1 of a generation.
type slot struct {
	current  *child      // nil while a restart is pending
	failures int         // unplanned exits in a row, for the backoff
	timer    *time.Timer // a pending restart
	// successor is the child starting to replace current (recycling);
	// current serves until it is ready.
	successor *child
	// noRecycleBefore holds off recycling after a successor failed.
	noRecycleBefore time.Time
}

// ReloadResult is the outcome of a reload: the generation serving after it,
// and why it failed, wrapping ErrReloadRejected, ErrRolledBack or
// ErrStopping.
type ReloadResult struct {
	Generation int
	Err        error
}

// Events the loop receives (besides sigchld).
type (
	notified struct {
		pid int
		msg notification
		at  time.Time // when it was read off the socket
	}
	readyTimeout      struct{ c *child }
	drainTimeout      struct{ c *child }
	watchdogExpired   struct{ c *child }
	watchdogGraceOver struct{ c *child }
	restartDue        struct{ s *slot }
	stopRequest       struct{ mode StopMode }
	statusRequest     struct{ reply chan Status }
	snapshotRequest   struct{ reply chan metrics.Snapshot }
	readyzRequest     struct{ reply chan string }
	reloadRequest     struct{ reply chan ReloadResult } // reply nil: nobody waits
)

// New checks cfg and prepares what the children will need, without starting
// any: every error here is the operator's to fix, reported before anything
// runs.
func New(cfg Config, opts Options) (*Supervisor, error) {
	g, err := newGeneration(1, cfg)
	if err != nil {
		return nil, err
	}
	if err := sockopt.CheckFree(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := closeOnExecAll(); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the master's executable: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Supervisor{
		opts:     opts,
		log:      log,
		self:     self,
		systemd:  os.Getenv("NOTIFY_SOCKET") != "",
		events:   make(chan any, 64),
		quit:     make(chan struct{}),
		children: make(map[int]*child),
		cur:      g,
		restarts: make(map[int]int),
		accepted: make(map[int]uint64),
		reloads:  make(map[string]uint64),
		sockets:  newSocketSet(),

		watchdogKills: make(map[int]uint64),
		recycles:      make(map[recycleKey]uint64),
		steering:      newSteering(),
	}
	on, why, err := decideSteering(cfg)
	if err != nil {
		return nil, err
	}
	s.sockets.steer, s.steering.off = on, why
	if cfg.Sockets == SocketsMaster {
		if err := s.sockets.ensure(cfg.Listen, cfg.Workers); err != nil {
			s.sockets.closeAll()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	if cfg.Control != "" {
		if s.control, err = listenControl(cfg.Control); err != nil {
			s.sockets.closeAll()
			return nil, err
		}
	}
	if cfg.Metrics != "" {
		if s.metrics, err = net.Listen("tcp", cfg.Metrics); err != nil {
			s.release()
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if s.devnull, err = os.Open(os.DevNull); err == nil {
		s.notify, err = listenNotify()
	}
	if err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

// newGeneration checks cfg and resolves its command.
func newGeneration(number int, cfg Config) (*generation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err == nil {
		path, err = filepath.Abs(path)
	}
	if err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	id, err := resolveIdentity(cfg)
	if err != nil {
		return nil, err
	}
	g := &generation{number: number, cfg: cfg, argv: append([]string{path}, cfg.Command[1:]...), id: id}
	g.slots = make([]*slot, cfg.Workers)
	for i := range g.slots {
		g.slots[i] = &slot{}
	}
	return g, nil
}

// release closes what New opened.
func (s *Supervisor) release() {
	if s.control != nil {
		// Remove before close: once closed, a successor may bind the path.
		os.Remove(s.cur.cfg.Control)
		s.control.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.notify != nil {
		s.notify.close()
	}
	if s.devnull != nil {
		s.devnull.Close()
	}
	s.sockets.closeAll()
}

// Run starts the children and supervises them until a stop, requested by
// Stop, by the admin API or by cancelling ctx (a graceful stop), has ended
// with every child reaped. It returns nil then, or ErrDrainCut when a
// child of a graceful stop was killed at the drain timeout.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.release()
	stopReaper := make(chan struct{})
	reaperDone := watchSIGCHLD(func() { s.send(sigchld{}) }, stopReaper)
	reap(s.exited) // anything that ended before we subscribed
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		s.readNotify()
	}()
	var admin, metricsSrv *http.Server
	if s.control != nil {
		admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		go admin.Serve(s.control)
	}
	if s.metrics != nil {
		metricsSrv = &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(s.metrics)
	}
	s.spawner = startSpawner(s.devnull)
	s.warnMigrateReq(s.cur.cfg)
	if s.steering.off != "" && s.cur.cfg.Steer == SteerAuto {
		s.log.Info("steering off", "reason", s.steering.off)
	}

	for i := range s.cur.slots {
		s.startServing(i)
	}
	s.loop(ctx)

	close(s.quit)
	if admin != nil {
		os.Remove(s.cur.cfg.Control)
		admin.Close()
	}
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	close(stopReaper)
	<-reaperDone
	s.spawner.stop()
	s.notify.close()
	<-notifyDone
	if s.drainCut && s.stopping == StopGraceful {
		return ErrDrainCut
	}
	return nil
}

func (s *Supervisor) loop(ctx context.Context) {
	done := ctx.Done()
	// The master's own watchdog, when systemd gave it one (WatchdogSec=):
	// pinged from the loop, so a loop that hangs stops the pings.
	var ping <-chan time.Time
	if d := systemdWatchdog(); d > 0 && s.systemd {
		t := time.NewTicker(d / 2)
		defer t.Stop()
		ping = t.C
	}
	defer s.setUpkeep(false)
	defer s.setSteerTicker(false)
	for s.stopping == 0 || len(s.children) > 0 {
		s.setUpkeep(s.stopping == 0 && (s.cur.cfg.MaxAccepts > 0 || s.cur.cfg.MaxRSS > 0))
		s.setSteerTicker(s.steeringActive())
		var upkeep, steerC <-chan time.Time
		if s.upkeep != nil {
			upkeep = s.upkeep.C
		}
		if s.steering.ticker != nil {
			steerC = s.steering.ticker.C
		}
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-upkeep:
			s.checkRecycling()
		case <-steerC:
			s.steerTick()
		case <-ping:
			s.notifySystemd("WATCHDOG=1")
		case <-done:
			done = nil
			s.stop(StopGraceful)
		}
	}
}

func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case sigchld:
		reap(s.exited)
	case notified:
		s.notified(ev)
	case readyTimeout:
		s.readyTimedOut(ev.c)
	case drainTimeout:
		s.drainTimedOut(ev.c)
	case watchdogExpired:
		s.watchdogExpired(ev.c)
	case watchdogGraceOver:
		s.watchdogGraceOver(ev.c)
	case restartDue:
		s.restartDue(ev.s)
	case stopRequest:
		s.stop(ev.mode)
	case statusRequest:
		ev.reply <- s.status()
	case snapshotRequest:
		ev.reply <- s.snapshot()
	case readyzRequest:
		ev.reply <- s.notReady()
	case scaleRequest:
		ev.reply <- s.rescale(ev)
	case reloadRequest:
		s.requestReload(ev.reply)
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

// RequestReload asks for a reload and returns at once (SIGHUP).
func (s *Supervisor) RequestReload() { s.send(reloadRequest{}) }

// Reload runs a reload and waits for its outcome, or for ctx.
func (s *Supervisor) Reload(ctx context.Context) ReloadResult {
	reply := make(chan ReloadResult, 1)
	select {
	case s.events <- reloadRequest{reply: reply}:
	case <-s.quit:
		return ReloadResult{Err: ErrNotRunning}
	case <-ctx.Done():
		return ReloadResult{Err: ctx.Err()}
	}
	select {
	case r := <-reply:
		return r
	case <-s.quit:
		return ReloadResult{Err: ErrNotRunning}
	case <-ctx.Done():
		return ReloadResult{Err: ctx.Err()}
	}
}

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

// startServing starts the child of a slot of the serving generation; a
// failure to start counts against the slot like an exit.
func (s *Supervisor) startServing(slotIndex int) {
	sl := s.cur.slots[slotIndex]
	c, err := s.startChild(s.cur, slotIndex)
	if err != nil {
		s.log.Error("child failed to start", "slot", slotIndex, "generation", s.cur.number, "err", err)
		sl.failures++
		s.scheduleRestart(s.cur, slotIndex)
		return
	}
	sl.current = c
}

// startChild starts a child for a slot of g; the caller gives it its place
// in the slot.
func (s *Supervisor) startChild(g *generation, slotIndex int) (*child, error) {
	cfg := g.cfg
	own := map[string]string{
		"PREFORK_LISTEN":        cfg.Listen,
		"PREFORK_SLOT":          strconv.Itoa(slotIndex),
		"PREFORK_GENERATION":    strconv.Itoa(g.number),
		"PREFORK_WORKERS":       strconv.Itoa(cfg.Workers),
		"PREFORK_DRAIN_TIMEOUT": cfg.DrainTimeout.String(),
		"NOTIFY_SOCKET":         s.notify.addr,
	}
	if cfg.Watchdog > 0 {
		own["WATCHDOG_USEC"] = strconv.FormatInt(cfg.Watchdog.Microseconds(), 10)
	}
	if id := g.id; id != nil && id.home != "" {
		// As login and systemd's User= do: a child of another user
		// must not write into the master's home.
		own["HOME"], own["USER"], own["LOGNAME"] = id.home, id.user, id.user
	}
	path, argv := g.argv[0], g.argv
	var extra []int // fd 3, 4, ... of the child
	if cfg.Sockets == SocketsMaster {
		fd, err := s.sockets.fd(cfg.Listen, slotIndex)
		if err != nil {
			return nil, err
		}
		extra = append(extra, fd) // fd 3, as socket activation wants
		own["LISTEN_FDS"] = "1"
		own["LISTEN_FDNAMES"] = "prefork"
		// LISTEN_PID must be the child's own pid, known only after the
		// fork: the master's binary, run as a shim, sets it and execs argv.
		// /proc/self/exe, resolved in the forked child, is the running
		// master's own inode, even if its file was replaced by an upgrade.
		path = "/proc/self/exe"
		argv = append([]string{s.self, ShimCommand}, g.argv...)
		own[envShimParent] = strconv.Itoa(os.Getpid())
	}
	page, err := counters.NewPage()
	if err != nil {
		// Counting is not worth a child: it serves, its accepts read 0.
		s.log.Warn("no counter page for a child", "slot", slotIndex, "err", err)
	} else {
		own["PREFORK_COUNTERS_FD"] = strconv.Itoa(3 + len(extra))
		extra = append(extra, page.FD())
	}
	now := time.Now()
	pid, err := s.spawner.spawn(path, argv, childEnv(os.Environ(), own), extra, g.id)
	if err != nil {
		page.Close()
		return nil, err
	}
	c := &child{pid: pid, gen: g, slot: slotIndex, state: StateStarting, started: now, page: page,
		acceptLimit: acceptLimit(cfg.MaxAccepts)}
	c.readyTimer = time.AfterFunc(cfg.ReadyTimeout, func() { s.send(readyTimeout{c: c}) })
	s.children[pid] = c
	s.log.Info("child started", "slot", slotIndex, "generation", g.number, "pid", pid)
	return c, nil
}

// live reports whether c is still a process of the table (its pid may
// since have been reused by another child).
func (s *Supervisor) live(c *child) bool { return s.children[c.pid] == c }

// slotOf returns the slot c belongs to, or nil when a scale-down removed it.
func (s *Supervisor) slotOf(c *child) *slot {
	if c.slot < len(c.gen.slots) {
		return c.gen.slots[c.slot]
	}
	return nil
}

func (s *Supervisor) notified(ev notified) {
	pid, msg := ev.pid, ev.msg
	c := s.childOf(pid)
	if c == nil {
		s.log.Debug("notify message from a process outside the group", "pid", pid)
		return
	}
	if msg.Watchdog {
		s.watchdogPing(c, ev.at)
	}
	if !msg.Ready || c.state != StateStarting || c.notReady {
		return // a READY=1 queued behind the ready timeout comes too late
	}
	c.state = StateReady
	c.readyAt = time.Now()
	c.readyTimer.Stop()
	s.log.Info("child ready", "slot", c.slot, "generation", c.gen.number, "pid", c.pid,
		"after", c.readyAt.Sub(c.started).Round(time.Microsecond).String())
	switch c.gen {
	case s.next:
		s.reloadStep(reloadInput{kind: inNewReady})
	case s.cur:
		if sl := s.slotOf(c); sl != nil && sl.successor == c {
			s.recycled(sl)
			return
		}
		if !s.announced && s.reload.phase == reloadIdle && s.allReady(s.cur) {
			s.announced = true
			s.notifySystemd("READY=1")
		}
	}
}

// allReady reports whether every slot of g has a ready child.
func (s *Supervisor) allReady(g *generation) bool {
	for _, sl := range g.slots {
		if sl.current == nil || sl.current.state != StateReady {
			return false
		}
	}
	return true
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
	s.log.Error("child not ready in time; killing it", "slot", c.slot, "generation", c.gen.number,
		"pid", c.pid, "ready_timeout", c.gen.cfg.ReadyTimeout.String())
	c.notReady = true
	s.kill(c, unix.SIGKILL)
}

func (s *Supervisor) drainTimedOut(c *child) {
	if !s.live(c) {
		return
	}
	if s.stopping != 0 {
		s.drainCut = true
	}
	s.log.Warn("child still draining at the drain timeout; killing it", "slot", c.slot,
		"generation", c.gen.number, "pid", c.pid, "drain_timeout", c.gen.cfg.DrainTimeout.String())
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
	// Fold the last count into the slot before the page goes, so that
	// the slot's counter never goes down.
	s.accepted[c.slot] += c.page.Accepts()
	c.page.Close()
	c.readyTimer.Stop()
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	if c.watchdogTimer != nil {
		c.watchdogTimer.Stop()
	}
	sl := s.slotOf(c) // nil when a scale-down removed the child's slot
	successor := sl != nil && sl.successor == c
	if successor {
		sl.successor = nil
	}
	if sl != nil && sl.current == c {
		sl.current = nil
	}
	attrs := []any{"slot", c.slot, "generation", c.gen.number, "pid", c.pid,
		"lived", e.at.Sub(c.started).Round(time.Millisecond).String()}
	attrs = append(attrs, exitAttrs(e.status)...)
	if c.state == StateDraining || s.stopping != 0 {
		s.log.Info("child exited", attrs...)
		return
	}
	reason := describeExit(e.status)
	switch {
	case c.notReady:
		attrs = append(attrs, "reason", "not ready in time")
		reason = fmt.Sprintf("not ready within %v", c.gen.cfg.ReadyTimeout)
	case c.watchdogKilled:
		attrs = append(attrs, "reason", "watchdog")
		reason = fmt.Sprintf("killed by the watchdog: no WATCHDOG=1 for %v (%s)", c.gen.cfg.Watchdog, reason)
	}
	s.log.Warn("child exited unexpectedly", attrs...)
	if successor {
		s.successorFailed(sl, c, reason)
		return
	}
	switch c.gen {
	case s.next:
		s.reloadErr = fmt.Errorf("slot %d pid %d: %s", c.slot, c.pid, reason)
		s.reloadStep(reloadInput{kind: inNewFailed})
	case s.cur:
		if sl == nil {
			return
		}
		s.steerAfterCrash(c)
		sl.failures = failuresAfterExit(sl.failures, c.readyAt, e.at)
		s.restarts[c.slot]++
		if sl.successor != nil {
			// The child being recycled died first: its successor, already
			// starting, takes the slot.
			sl.current, sl.successor = sl.successor, nil
			return
		}
		s.scheduleRestart(c.gen, c.slot)
	}
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

func describeExit(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with code %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("ended with status %#x", int(ws))
}

func (s *Supervisor) scheduleRestart(g *generation, slotIndex int) {
	if s.stopping != 0 {
		return
	}
	sl := g.slots[slotIndex]
	delay := restartDelay(sl.failures)
	s.log.Info("restarting slot", "slot", slotIndex, "generation", g.number, "in", delay.String(),
		"failures_in_a_row", sl.failures)
	if delay == 0 {
		s.startServing(slotIndex)
		return
	}
	sl.timer = time.AfterFunc(delay, func() { s.send(restartDue{s: sl}) })
}

func (s *Supervisor) restartDue(sl *slot) {
	sl.timer = nil
	if s.stopping != 0 || sl.current != nil {
		return
	}
	// Only the serving generation restarts; a slot of a generation that
	// was replaced meanwhile has no business starting anything.
	for i, cur := range s.cur.slots {
		if cur == sl {
			s.startServing(i)
		}
	}
}

func (s *Supervisor) stop(mode StopMode) {
	if s.stopping >= mode {
		return
	}
	if s.stopping == 0 {
		s.notifySystemd("STOPPING=1")
	}
	s.stopping = mode
	s.log.Info("stopping", "mode", map[StopMode]string{StopGraceful: "graceful", StopFast: "fast"}[mode],
		"children", len(s.children))
	for _, g := range []*generation{s.cur, s.next} {
		if g == nil {
			continue
		}
		for _, sl := range g.slots {
			if sl.timer != nil {
				sl.timer.Stop()
				sl.timer = nil
			}
		}
	}
	s.finishReload(ErrStopping)
	s.next = nil
	s.reload = reloadState{}
	s.queued = nil
	for _, c := range s.children {
		if mode == StopFast {
			s.kill(c, unix.SIGKILL)
		} else {
			s.drain(c)
		}
	}
	// The children closed their copies on SIGTERM: a master-held socket
	// left open would only queue connections that nobody will accept,
	// where a closed one refuses them at once.
	s.sockets.closeAll()
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
	c.killTimer = time.AfterFunc(c.gen.cfg.DrainTimeout, func() { s.send(drainTimeout{c: c}) })
}

// kill signals c. Only the loop reaps, and it removes a child from the table
// as it does, so c.pid cannot name another process here. SIGKILL goes to
// the child's whole process group (it leads one of its own), as systemd's
// KillMode=control-group would: a helper the child started must not
// outlive it. SIGTERM goes to the child alone; how it stops its helpers is
// its own business.
func (s *Supervisor) kill(c *child, sig unix.Signal) {
	target := c.pid
	if sig == unix.SIGKILL {
		target = -c.pid
	}
	err := unix.Kill(target, sig)
	if errors.Is(err, unix.ESRCH) && target < 0 {
		err = unix.Kill(c.pid, sig) // the child left its group
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Error("signal child", "pid", c.pid, "signal", unix.SignalName(sig), "err", err)
	}
}

func (s *Supervisor) readNotify() {
	buf := make([]byte, notifyMaxDatagram)
	oob := make([]byte, credentialsSpace)
	for {
		pid, data, err := s.notify.read(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return // closed by Run
		}
		if err != nil {
			// Ending here would leave every later child unready forever.
			s.log.Error("read the notify socket", "err", err)
			continue
		}
		s.send(notified{pid: pid, msg: parseNotify(data), at: time.Now()})
	}
}

func (s *Supervisor) warnMigrateReq(cfg Config) {
	if cfg.Sockets != SocketsChild {
		return
	}
	on, err := sockopt.MigrateReq()
	if err != nil {
		s.log.Warn("cannot read net.ipv4.tcp_migrate_req", "err", err)
		return
	}
	if !on {
		s.log.Warn("net.ipv4.tcp_migrate_req is 0: a reload or crash resets the connections queued on the exiting child's listener; fix with: sysctl -w net.ipv4.tcp_migrate_req=1, or use --sockets master")
	}
}
