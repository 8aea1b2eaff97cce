package supervisor

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The loop's side of a reload: it feeds the state machine
// (reloadmachine.go) and performs its actions on real processes.

// ReloadResult is the outcome of a reload: the generation serving after it,
// and why it failed, wrapping ErrReloadRejected, ErrRolledBack or
// ErrStopping.
type ReloadResult struct {
	Generation int
	Err        error
}

// loadTimeout is how long a reload waits for its configuration to be
// read: a config file is a few lines, so only a hung filesystem (or a
// file that is not one) takes longer.
const loadTimeout = 5 * time.Second

// reloadRun is the reload in progress and the callers waiting on it.
type reloadRun struct {
	machine reloadMachine
	read    configRead
	next    *generation // the generation a reload is starting, or nil
	started time.Time
	err     error                 // why the running reload failed
	outcome ReloadResult          // of the reload that just ended, for actAnswer
	waiters []chan<- ReloadResult // callers of the running reload
	later   []chan<- ReloadResult // callers of the coalesced reload after it
	// asked is the options of the next reload to load its configuration;
	// opts, those of the running one.
	asked, opts ReloadOptions
	strategy    string      // of the running reload, for the outcome counters
	roll        *rolloutRun // the running rollout; nil for a generation reload
}

func (r *reloadRun) idle() bool { return r.machine.phase == reloadIdle }

// configRead is the reload's read of its configuration. Options.Load runs
// in a goroutine of its own, never on the loop: it reads a file the
// operator controls, and a read the kernel never completes (a hung network
// filesystem) would otherwise stop supervision. At most one such goroutine
// exists: a read cannot be cancelled, so while one is stuck no other
// starts.
type configRead struct {
	// timeout is how long a reload waits for the read; 0 means
	// loadTimeout. Tests shorten it.
	timeout time.Duration
	seq     uint64    // of the read the running reload waits for
	pending uint64    // of the read whose goroutine has not returned; 0: none
	since   time.Time // when the pending read began
	timer   timer     // the running reload's deadline
	// What the read returned, for actBegin: the next generation, not
	// numbered yet, and the start-only settings it keeps.
	next *generation
	kept []string
}

// wait is how long a reload waits for its read.
func (c *configRead) wait() time.Duration {
	if c.timeout > 0 {
		return c.timeout
	}
	return loadTimeout
}

// requestReload asks for a reload; reply, if not nil, gets its outcome.
func (s *Supervisor) requestReload(reply chan<- ReloadResult) {
	s.requestReloadWith(reply, ReloadOptions{})
}

// requestReloadWith asks for a reload with o; a request coalesced into
// the reload after the running one gives it its options, the last one's
// winning.
func (s *Supervisor) requestReloadWith(reply chan<- ReloadResult, o ReloadOptions) {
	if s.stopping != 0 {
		if reply != nil {
			reply <- ReloadResult{Generation: s.cur.number, Err: ErrStopping}
		}
		return
	}
	if s.upgrade.running && s.upgrade.to != "" {
		// The new binary passed its check, and the exec would cut the
		// new generation short.
		err := fmt.Errorf("%w: an upgrade of the master is under way; reload once it has ended", ErrReloadRejected)
		s.log.Error("reload refused", "err", err)
		if reply != nil {
			reply <- ReloadResult{Generation: s.cur.number, Err: err}
		}
		return
	}
	if o != (ReloadOptions{}) {
		s.reload.asked = o
	}
	running := !s.reload.idle()
	if reply != nil {
		if running {
			s.reload.later = append(s.reload.later, reply)
		} else {
			s.reload.waiters = append(s.reload.waiters, reply)
		}
	}
	s.log.Info("reload requested", "running_already", running)
	s.driveReload(reloadInput{kind: inRequest})
}

// driveReload feeds in to the state machine and performs the actions it
// returns; an action that yields an input (starting a generation) has it
// fed in turn, until the machine waits for the outside world again.
func (s *Supervisor) driveReload(in reloadInput) {
	for in.kind != 0 {
		var actions []reloadAction
		s.reload.machine, actions = s.reload.machine.step(in)
		in = reloadInput{}
		for _, a := range actions {
			if next := s.perform(a); next.kind != 0 {
				in = next
			}
		}
	}
}

// perform carries out one action of the reload machine and returns the
// input it yields, if any (actBegin, and actLoad when it need not wait).
func (s *Supervisor) perform(a reloadAction) reloadInput {
	switch a {
	case actLoad:
		return s.startLoad()
	case actBegin:
		return s.beginReload()
	case actCommit:
		s.commitReload()
	case actRollback:
		s.rollbackReload()
	case actReject:
		s.rejectReload()
	case actAnswer:
		s.answerReload(s.reload.waiters, s.reload.outcome)
		s.reload.waiters = nil
	case actAbandon:
		s.abandonReload()
	case actRoll:
		return s.rollStep(rollInput{kind: rollBegin})
	}
	return reloadInput{}
}

// startLoad begins a reload: it starts reading the configuration off the
// loop, with a deadline. The result arrives as a configLoaded event, the
// deadline as a configReadTimeout; without Options.Load the serving
// configuration is reloaded at once.
func (s *Supervisor) startLoad() reloadInput {
	r := &s.reload
	r.started = s.env.clock.Now()
	r.err = nil
	r.waiters, r.later = append(r.waiters, r.later...), nil
	r.opts, r.asked = r.asked, ReloadOptions{}
	r.strategy = r.opts.over(s.cur.cfg).strategy()
	s.notifySystemd(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicMicros()))
	load, cur := s.opts.Load, s.cur.cfg
	c := &r.read
	if load == nil {
		var err error
		if c.next, c.kept, err = resolveNext(cur, cur); err != nil {
			r.err = err
			return reloadInput{kind: inRejected}
		}
		return reloadInput{kind: inLoaded}
	}
	if c.pending != 0 {
		// Another goroutine would only join the stuck one.
		r.err = fmt.Errorf("config: the read of %s started %s ago has not returned; no new read starts until it does (is it on a hung filesystem?)",
			s.configName(), s.env.clock.Now().Sub(c.since).Round(time.Millisecond))
		return reloadInput{kind: inRejected}
	}
	c.seq++
	seq := c.seq
	c.pending, c.since = seq, s.env.clock.Now()
	c.timer = s.env.clock.AfterFunc(c.wait(), func() { s.send(configReadTimeout{seq: seq}) })
	go func() {
		ev := configLoaded{seq: seq}
		var cfg Config
		if cfg, ev.err = load(); ev.err == nil {
			ev.next, ev.kept, ev.err = resolveNext(cur, cfg)
		}
		s.send(ev)
	}()
	return reloadInput{}
}

// configLoaded takes the result of a read: the reload waiting for it goes
// on, or is rejected; the result of a read whose reload already timed out
// only frees the way for the next read.
func (s *Supervisor) configLoaded(ev configLoaded) {
	c := &s.reload.read
	if ev.seq == c.pending {
		c.pending = 0
	}
	if ev.seq != c.seq || s.reload.machine.phase != reloadLoading {
		s.log.Info("a config read returned after its reload had given up; result ignored",
			"config", s.configName(), "took_ms", millis(s.env.clock.Now().Sub(c.since)))
		return
	}
	stopTimer(c.timer)
	if ev.err != nil {
		s.reload.err = ev.err
		s.driveReload(reloadInput{kind: inRejected})
		return
	}
	c.next, c.kept = ev.next, ev.kept
	s.driveReload(reloadInput{kind: inLoaded})
}

// resolveNext makes the next generation, not numbered yet, of the
// configuration loaded over cur, the serving one, and returns the
// start-only settings it kept from cur. It checks the configuration and
// resolves the command and the user, which reads the filesystem and the
// user database (NSS may ask the network): the loop calls it only without
// Options.Load, on the configuration it already runs.
func resolveNext(cur, loaded Config) (*generation, []string, error) {
	// The master's own sockets, log and steering are not the children's:
	// they stay until the next start.
	cfg, kept := keepStartOnly(cur, loaded)
	g, err := newGeneration(0, cfg)
	return g, kept, err
}

// configReadTimedOut rejects the reload whose read passed its deadline.
// The read's goroutine stays blocked in the kernel; its result, if it
// ever comes, is ignored.
func (s *Supervisor) configReadTimedOut(seq uint64) {
	c := &s.reload.read
	if seq != c.seq || c.pending != seq || s.reload.machine.phase != reloadLoading {
		return // the read returned first
	}
	s.reload.err = fmt.Errorf("config: reading %s took longer than %s; is it on a hung filesystem?", s.configName(), c.wait())
	s.driveReload(reloadInput{kind: inRejected})
}

// configName names what Options.Load reads, for the log.
func (s *Supervisor) configName() string {
	if s.opts.ConfigFile != "" {
		return s.opts.ConfigFile
	}
	return "the configuration"
}

// beginReload binds what the next generation, made of the configuration
// read, needs and starts its children.
func (s *Supervisor) beginReload() reloadInput {
	r := &s.reload
	g := r.read.next
	r.read.next = nil
	g.number = s.cur.number + 1
	if len(r.read.kept) > 0 {
		s.log.Warn("settings changed that take effect at the next start, not on reload", "settings", r.read.kept)
	}
	if err := s.bindGeneration(g); err != nil {
		r.err = err
		return reloadInput{kind: inRejected}
	}
	r.next = g
	rcfg := r.opts.over(g.cfg)
	r.strategy = rcfg.strategy()
	if rolls(rcfg) {
		why := cannotRoll(s.cur.cfg, g.cfg)
		if why == "" {
			s.beginRollout(g, rcfg)
			return reloadInput{kind: inSpawned, rolling: true}
		}
		s.log.Warn("this reload starts a whole generation, without canaries: it cannot go slot by slot when "+why,
			"strategy", rcfg.strategy(), "canary", rcfg.Canary)
		r.strategy = StrategyGeneration
	}
	s.log.Info("reload started", "generation", g.number, "workers", g.cfg.Workers, "listen", g.cfg.Listen.String(),
		"command", g.cfg.Command)
	for i, sl := range g.slots {
		c, err := s.startChild(g, i)
		if err != nil {
			if r.err == nil {
				r.err = fmt.Errorf("slot %d: %w", i, err)
			}
			continue
		}
		sl.current = c
	}
	return reloadInput{kind: inSpawned, n: len(g.slots), failed: r.err != nil}
}

// bindGeneration binds what the next generation g needs. An error means
// rejection: nothing changed.
func (s *Supervisor) bindGeneration(g *generation) error {
	cfg := g.cfg
	for _, l := range cfg.Listen {
		if s.cur.cfg.Listen.has(l.key()) || s.sockets.has(l.key()) {
			continue // the serving children's, or the master's
		}
		if err := checkFree(l); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	if cfg.Sockets == SocketsMaster {
		if err := s.sockets.ensure(cfg.Listen, cfg.Workers); err != nil {
			s.sockets.release(s.inUse)
			return fmt.Errorf("listen: %w", err)
		}
	}
	return nil
}

// commitReload makes the new generation the serving one and drains every
// child of the generations before it.
func (s *Supervisor) commitReload() {
	s.endRollout()
	s.capDraining(s.reload.next.cfg.maxDraining())
	old := s.cur
	s.cur, s.reload.next = s.reload.next, nil
	for _, sl := range old.slots {
		sl.cancelRestart()
	}
	for _, c := range s.children {
		if c.gen != s.cur {
			s.drain(c)
		}
	}
	took := s.env.clock.Now().Sub(s.reload.started)
	s.tally.reloads[reloadKey("success", s.reload.strategy)]++
	s.tally.reloadHist.Observe(took.Seconds())
	s.tally.slotsEver = max(s.tally.slotsEver, s.cur.cfg.Workers)
	s.log.Info("reload succeeded", "generation", s.cur.number, "strategy", s.reload.strategy, "took_ms", millis(took))
	s.reload.outcome = ReloadResult{Generation: s.cur.number}
	s.announced = true
	s.notifySystemd("READY=1")
	s.syncSteerSlots() // before a slot's socket closes: its queue migrates by the new count
	s.sockets.release(s.inUse)
	s.taken.release(s.takenInUse)
	if old.cfg.Sockets != s.cur.cfg.Sockets {
		s.warnMigrateReq(s.cur.cfg)
	}
}

// rollbackReload drains the new generation; the old one never stopped.
func (s *Supervisor) rollbackReload() {
	s.endRollout()
	if g := s.reload.next; g != nil {
		s.reload.next = nil
		for _, sl := range g.slots {
			sl.cancelRestart()
		}
		for _, c := range s.children {
			// Drained, not killed: a new child may already serve
			// connections while a sibling failed.
			if c.gen == g {
				s.drain(c)
			}
		}
	}
	s.tally.reloads[reloadKey("rolled_back", s.reload.strategy)]++
	s.log.Error("reload rolled back; the old generation serves on", "generation", s.cur.number,
		"reason", s.reload.err.Error())
	s.reload.outcome = ReloadResult{Generation: s.cur.number, Err: fmt.Errorf("%w: %w", ErrRolledBack, s.reload.err)}
	s.reportReloadEnd()
	s.syncSteerSlots()
	s.sockets.release(s.inUse)
	s.taken.release(s.takenInUse)
}

// rejectReload reports a configuration refused before anything started.
func (s *Supervisor) rejectReload() {
	s.tally.reloads[reloadKey("rejected", s.reload.strategy)]++
	s.log.Error("reload rejected; nothing changed", "generation", s.cur.number, "reason", s.reload.err.Error())
	s.reload.outcome = ReloadResult{Generation: s.cur.number, Err: fmt.Errorf("%w: %w", ErrReloadRejected, s.reload.err)}
	s.reportReloadEnd()
}

// abortReload tells the machine that the supervisor stops.
func (s *Supervisor) abortReload() { s.driveReload(reloadInput{kind: inStop}) }

// abandonReload ends the running reload for a stop, which drains its
// children with every other; everyone waiting is told.
func (s *Supervisor) abandonReload() {
	s.endRollout()
	r := &s.reload
	r.next = nil
	stopTimer(r.read.timer)
	s.answerReload(append(r.waiters, r.later...), ReloadResult{Generation: s.cur.number, Err: ErrStopping})
	r.waiters, r.later = nil, nil
}

// reportReloadEnd tells systemd that a failed reload is over: the old
// generation serves, which is READY=1 once it has been ready at all.
func (s *Supervisor) reportReloadEnd() {
	if s.announced || allReady(s.cur) {
		s.announced = true
		s.notifySystemd("READY=1")
	}
}

// answerReload gives r to every caller in to; each channel has room for
// one, so the loop never waits.
func (s *Supervisor) answerReload(to []chan<- ReloadResult, r ReloadResult) {
	for _, w := range to {
		w <- r
	}
}

// inUse reports whether a master-held socket is still needed: by the
// serving or the starting generation. A draining child closed its copy at
// SIGTERM; keeping the socket open for it would only let new connections
// queue where nobody accepts them.
func (s *Supervisor) inUse(addr string, slotIndex int) bool {
	for _, g := range []*generation{s.cur, s.reload.next} {
		if g != nil && g.cfg.Sockets == SocketsMaster && g.cfg.Listen.has(addr) && slotIndex < g.cfg.Workers {
			return true
		}
	}
	return false
}

// monotonicMicros is CLOCK_MONOTONIC in microseconds, as systemd wants
// it in MONOTONIC_USEC.
func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// ReloadOptions are one reload's own rollout settings (`master reload
// --strategy`, POST /reload?strategy=): a zero field takes the value of
// the configuration the reload reads.
type ReloadOptions struct {
	Strategy  string        // StrategyGeneration or StrategyRolling
	MaxSurge  int           // slots replaced at once by a rolling reload
	Canary    int           // slots replaced first and watched
	CanaryFor time.Duration // how long the canaries are watched
	// NoCanary turns a configured canary off for this reload (canary=0).
	NoCanary bool
}

// Check reports what is wrong with o, in the words of the settings.
func (o ReloadOptions) Check() error {
	c := Config{ReloadStrategy: o.Strategy, MaxSurge: o.MaxSurge, Canary: o.Canary, CanaryFor: o.CanaryFor}
	return c.checkRollout()
}

// over returns cfg with o's settings in place of its own.
func (o ReloadOptions) over(cfg Config) Config {
	if o.Strategy != "" {
		cfg.ReloadStrategy = o.Strategy
	}
	if o.MaxSurge > 0 {
		cfg.MaxSurge = o.MaxSurge
	}
	if o.Canary > 0 {
		cfg.Canary = o.Canary
	}
	if o.NoCanary {
		cfg.Canary = 0
	}
	if o.CanaryFor > 0 {
		cfg.CanaryFor = o.CanaryFor
	}
	return cfg
}
