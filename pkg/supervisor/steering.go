package supervisor

import (
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/steer"
)

// Steering (--steer) keeps new connections away from a slot whose child is
// stuck or missing. The master holds every slot's socket (master socket
// mode), and an eBPF program on the reuseport group picks the slot the
// kernel's hash would, unless the loop marked it unhealthy: then another
// healthy slot. The loop decides health every steerInterval from what it
// owns anyway: which children are ready, the counter pages, and each
// socket's accept queue (TCP_INFO). Connections already queued on a stuck
// slot stay there; the kernel cannot move them (the watchdog is their
// remedy).
//
// While the group is idle (every slot healthy, every queue empty, no new
// connection since the check before: the program's run count), the checks
// back off, doubling up to steerIdleMax, so that an idle master costs
// next to nothing; the first check that sees a connection comes back to
// steerInterval. An idle stuck child has nothing to steer: a stuck slot
// is steered away from within about 125 ms under load, and within
// steerIdleMax more when the load starts on an idle group. Events that
// change a slot's health judge the slots at once: an exit (steerAfterCrash),
// READY (steerReady), a missed watchdog.

// steerInterval is how often the loop judges the slots' health while the
// group takes connections: a quarter of the stuck window, so a stuck slot
// is steered away from within about 125 ms.
const steerInterval = DefaultStuckWindow / 4

// steerIdleMax is the longest the checks back off to while the group is
// idle: a stuck child is then noticed within about 100 ms of the load
// starting (issue 13), at about 0.4 CPU s/min of an idle master with 64
// children (400 ms cost a quarter of that, and four times the delay).
const steerIdleMax = 100 * time.Millisecond

// steering is the loop's view of the slots' health.
type steering struct {
	of      *steer.Steerer // the program the state below is for
	health  map[int]*slotHealth
	away    map[int]bool   // steered away now
	changes map[int]uint64 // times steered away
	slots   int            // the active slots last given to the program
	ticker  ticker         // the health checks; nil when not steering
	period  time.Duration  // the ticker's period
	// interval is the period the checks want: steerInterval, or longer
	// while the group is idle.
	interval time.Duration
	runs     uint64       // the program's runs at the last check
	runsSeen bool         // runs was read
	off      string       // why steering is off, for the log; "" when on
	watch    programWatch // whether the program still chooses
	rescue   rescue       // the rescues of stuck slots' queues (rescue.go)
	// gone is, by slot, the connections the slot's gone children
	// accepted on their primary listener: with the live children's, the
	// progress the checks look for (the accepts of other listeners ran
	// no program of this group).
	gone map[int]uint64
	// mirrors are the programs of the serving generation's other
	// listeners (master socket mode), with what they were last told.
	mirrors map[*steer.Steerer]*mirror
}

// mirror is what a program of another listener was last told: its
// active slots (-1: not told yet) and, by slot, whether it is healthy (a
// slot not in the map: not told yet; the program may hold anything, from
// the time it steered the first TCP listener itself).
type mirror struct {
	slots   int
	healthy map[int]bool
}

func newSteering() *steering {
	return &steering{health: make(map[int]*slotHealth), away: make(map[int]bool), changes: make(map[int]uint64),
		gone: make(map[int]uint64), mirrors: make(map[*steer.Steerer]*mirror)}
}

// follow resets the health state when the program is another one (a
// reload moved the address): a new program starts with every slot
// unhealthy and no slot count, and learns them all again.
func (st *steering) follow(p *steer.Steerer) {
	if st.of == p {
		return
	}
	st.of, st.slots = p, 0
	st.health = make(map[int]*slotHealth)
	st.away = make(map[int]bool)
	st.watch = programWatch{}
	st.rescue.inFlight = nil // their events come back stale, and only thaw
	st.interval, st.runsSeen = steerInterval, false
}

// decideSteering settles --steer at start: steering is on where the
// program loads, in both socket modes (in child socket mode, for the
// children whose listeners the master may take: childsteer.go). "on"
// where it cannot is the operator's error; "auto" says once why it is
// off.
func decideSteering(cfg Config, supported func() error) (on bool, why string, err error) {
	if cfg.Steer == SteerOff {
		return false, "--steer off", nil
	}
	if err := supported(); err != nil {
		if cfg.Steer == SteerOn {
			return false, "", fmt.Errorf("steer: on, but the steering program cannot load here: %w", err)
		}
		return false, err.Error(), nil
	}
	return true, "", nil
}

// setTicker starts or stops the health checks, at the period they want
// now, and returns the ticker's channel (nil when stopped).
func (st *steering) setTicker(clk clock, on bool) <-chan time.Time {
	want := max(st.interval, steerInterval)
	if st.ticker != nil && st.period != want {
		st.ticker.Stop()
		st.ticker = nil
	}
	st.period = want
	return toggleTicker(clk, &st.ticker, want, on)
}

// backOff sets the checks' next period: doubled, up to steerIdleMax, after
// a check that found the group idle; steerInterval after any other.
func (st *steering) backOff(idle bool) {
	if !idle {
		st.interval = steerInterval
		return
	}
	st.interval = min(max(2*st.interval, steerInterval), steerIdleMax)
}

// steeringActive reports whether the serving generation's group is steered.
func (s *Supervisor) steeringActive() bool {
	return s.stopping == 0 && s.steerProgram() != nil
}

// steerProgram returns the program that steers the serving address's
// group in the serving generation's socket mode, or nil.
func (s *Supervisor) steerProgram() *steer.Steerer {
	addr := s.cur.cfg.steerKey()
	if s.cur.cfg.Sockets == SocketsMaster {
		return s.sockets.steerer(addr)
	}
	return s.taken.steerer(addr)
}

// steeredSocket reports whether children of generation g share the
// sockets the serving generation's program steers.
func (s *Supervisor) steeredSocket(g *generation) bool {
	return g.cfg.Sockets == s.cur.cfg.Sockets && g.cfg.steerKey() == s.cur.cfg.steerKey()
}

// slotQueue returns how many connections wait on slot's socket of the
// serving address: the master's own in master socket mode, its copy of
// the slot's child's in child socket mode.
func (s *Supervisor) slotQueue(slot int) (uint32, bool) {
	if s.cur.cfg.Sockets == SocketsMaster {
		return s.sockets.acceptQueue(s.cur.cfg.steerKey(), slot)
	}
	return s.taken.acceptQueue(s.cur.cfg.steerKey(), slot)
}

// syncSteerSlots tells the program how many slots the address has: as
// many as the generation using it with the most.
func (s *Supervisor) syncSteerSlots() {
	prog := s.steerProgram()
	if prog == nil {
		return
	}
	if s.steering.of != prog {
		s.unmirror(prog)
	}
	s.steering.follow(prog)
	n := 0
	for _, g := range []*generation{s.cur, s.reload.next} {
		if g != nil && s.steeredSocket(g) {
			n = max(n, len(g.slots))
		}
	}
	if n == s.steering.slots {
		return
	}
	for i := n; i < s.steering.slots; i++ {
		// A retired slot comes back, if ever, unhealthy until its new
		// child is ready.
		prog.SetHealthy(i, false)
		delete(s.steering.health, i)
		delete(s.steering.away, i)
	}
	if err := prog.SetSlots(n); err != nil {
		s.log.Error("could not give the steering program the number of slots", "slots", n, "err", err)
		return
	}
	s.steering.slots = n
}

// steerAfterCrash acts on an unplanned exit at once rather than at the
// next tick: the slot is steered away from, and when it has no ready child
// left, its socket is renewed, so that the connections that queued on it
// since the exit move to the healthy slots (the program migrates them)
// instead of waiting for the replacement's start.
func (s *Supervisor) steerAfterCrash(c *child) {
	if !s.steers(c) {
		return
	}
	s.steerTick()
	if c.gen.cfg.Sockets != SocketsMaster {
		return // its listener closed with it, and its queue moved
	}
	if h := s.steering.health[c.slot]; h == nil || h.healthy {
		return // another ready child (of a reload) serves the slot
	}
	for _, o := range s.children {
		if o.slot == c.slot && o.gen.cfg.Sockets == SocketsMaster && o.gen.cfg.steerKey() == c.gen.cfg.steerKey() &&
			o.life != lifeDraining {
			// A starting child (a reload's, a recycling successor) holds
			// the socket: closing the master's copy would move nothing,
			// and leave that child on a socket outside the program.
			return
		}
	}
	// Every TCP listener's: the connections queued for the crashed
	// child wait on each. A UDP socket's datagrams cannot move; they
	// wait for the slot's next child.
	for _, l := range c.gen.cfg.Listen {
		if l.Network != NetTCP {
			continue
		}
		renewed, err := s.sockets.renew(l.key(), c.slot)
		switch {
		case err != nil:
			s.log.Error("could not renew the socket of a crashed child's slot", "slot", c.slot, "listen", l.String(), "err", err)
		case renewed:
			s.log.Info("socket of the slot renewed; its queued connections moved to the group's other sockets", "slot", c.slot,
				"listen", l.String())
		}
	}
}

// mirrorSteer gives the groups of the serving generation's other
// listeners (master socket mode: TCP and UDP) the slots and health that
// the checks of the first TCP listener decided: a stuck child is stuck on
// all its sockets, and a program without slots would leave every
// connection and datagram to the kernel's hash.
func (s *Supervisor) mirrorSteer() {
	seen := make(map[*steer.Steerer]bool)
	defer func() {
		for p := range s.steering.mirrors {
			if !seen[p] {
				delete(s.steering.mirrors, p) // closed, or not the serving generation's
			}
		}
	}()
	if s.cur.cfg.Sockets != SocketsMaster {
		return
	}
	primary := s.cur.cfg.steerKey()
	for _, l := range s.cur.cfg.Listen {
		prog := s.sockets.steerer(l.key())
		if l.key() == primary || prog == nil {
			continue
		}
		seen[prog] = true
		m := s.steering.mirrors[prog]
		if m == nil {
			m = &mirror{slots: -1, healthy: make(map[int]bool)}
			s.steering.mirrors[prog] = m
		}
		if err := s.mirrorTo(prog, m); err != nil {
			s.log.Error("could not steer a listener's group as the first TCP listener's", "listen", l.String(), "err", err)
		}
	}
}

// unmirror makes prog, a program that mirrored another listener's (a
// reload made its listener the first TCP one), what follow takes a new
// program for: every slot it was told healthy goes back to unhealthy,
// until the checks find it healthy again.
func (s *Supervisor) unmirror(prog *steer.Steerer) {
	m := s.steering.mirrors[prog]
	if m == nil {
		return
	}
	delete(s.steering.mirrors, prog)
	for i, healthy := range m.healthy {
		if healthy {
			if err := prog.SetHealthy(i, false); err != nil {
				s.log.Error("could not reset a slot's health in the steering program", "slot", i, "err", err)
			}
		}
	}
}

// mirrorTo tells prog what it was not told yet of the slots and their
// health, and keeps in m what it was told.
func (s *Supervisor) mirrorTo(prog *steer.Steerer, m *mirror) error {
	if m.slots != s.steering.slots {
		if err := prog.SetSlots(s.steering.slots); err != nil {
			return fmt.Errorf("set %d slots: %w", s.steering.slots, err)
		}
		m.slots = s.steering.slots
	}
	for i := range s.steering.slots {
		h := s.steering.health[i]
		healthy := h != nil && h.healthy
		if told, ok := m.healthy[i]; ok && told == healthy {
			continue
		}
		if err := prog.SetHealthy(i, healthy); err != nil {
			return fmt.Errorf("slot %d healthy %v: %w", i, healthy, err)
		}
		m.healthy[i] = healthy
	}
	return nil
}

// steers reports whether c serves the steered group.
func (s *Supervisor) steers(c *child) bool {
	return s.steeringActive() && s.steeredSocket(c.gen)
}

// steerReady acts on a child that just became ready at once rather than at
// the next tick: its slot is healthy and takes new connections now. Its
// stuck window starts now too, so that the connections queued for it
// while it started (with nobody to accept them) are not held against it.
func (s *Supervisor) steerReady(c *child) {
	if !s.steers(c) {
		return
	}
	if h := s.steering.health[c.slot]; h != nil {
		h.restart()
	}
	s.steerTick()
}

// steerNow judges the slots at once after an event that may have made c's
// slot unhealthy (a missed watchdog), rather than at the next tick, which
// may be steerIdleMax away.
func (s *Supervisor) steerNow(c *child) {
	if s.steers(c) {
		s.steerTick()
	}
}

// steeredAway returns, by slot, whether new connections are steered away
// from it now: it is unhealthy while another slot is healthy (with none
// healthy, the program leaves the choice to the kernel).
func (s *Supervisor) steeredAway() []bool {
	if !s.steeringActive() {
		return nil
	}
	away := make([]bool, s.steering.slots)
	anyHealthy := false
	for i := range away {
		h := s.steering.health[i]
		away[i] = h == nil || !h.healthy
		anyHealthy = anyHealthy || !away[i]
	}
	if !anyHealthy {
		return nil
	}
	return away
}

// steerTick judges every slot of the serving address and tells the program
// what changed.
func (s *Supervisor) steerTick() {
	addr := s.cur.cfg.steerKey()
	prog := s.steerProgram()
	if prog == nil {
		return
	}
	defer s.mirrorSteer()
	s.syncSteerSlots()
	n := s.steering.slots
	type view struct {
		ready, hung, counting bool
		accepts               uint64
		quiet                 []int // the children that never counted an accept
		pids                  []int // all its children
	}
	views := make([]view, n)
	for _, c := range s.children {
		if c.slot >= n || !s.steeredSocket(c.gen) || c.life == lifeDraining {
			continue
		}
		v := &views[c.slot]
		n := c.steerAccepts()
		v.accepts += n
		// Every child gets a page; one that never counted on it (a
		// program that ignores it) shows progress by its queue instead.
		v.counting = v.counting || n > 0
		if c.state() == StateReady {
			v.ready = v.ready || c.life.serving()
			v.hung = v.hung || c.life == lifeHung
		}
		if n == 0 {
			v.quiet = append(v.quiet, c.pid)
		}
		v.pids = append(v.pids, c.pid)
	}
	runs, runsOK := s.watchProgram(prog, addr, n)
	// Idle: no connection came since the check before, and none waits.
	idle := n > 0 && runsOK && s.steering.runsSeen && runs == s.steering.runs
	s.steering.runs, s.steering.runsSeen = runs, runsOK
	defer func() { s.steering.backOff(idle) }()
	now := s.env.clock.Now()
	queues := make([]uint32, n)
	defer func() { s.startRescues(queues) }()
	for i := range n {
		h := s.steering.health[i]
		if h == nil {
			h = &slotHealth{}
			s.steering.health[i] = h
		}
		queued, _ := s.slotQueue(i)
		queues[i] = queued
		v := views[i]
		var cpu time.Duration
		var timed bool
		if timeOf := v.quiet; queued > 0 && !v.counting || h.wantsCPU() {
			// Its cgroups' CPU, read only when it matters: 64 reads
			// every check were most of an idle master's cost. After a
			// rescue, every child's: CPU used is how one that resumed
			// shows it, with nothing to accept.
			if h.wantsCPU() {
				timeOf = v.pids
			}
			for _, pid := range timeOf {
				if d, ok := s.env.procs.cpu(pid); ok {
					cpu += d
					timed = true
				}
			}
		}
		accepts := s.steering.gone[i] + v.accepts
		idle = idle && queued == 0 && accepts == h.accepts
		changed := h.update(healthInput{ready: v.ready, hung: v.hung && !v.ready, accepts: accepts,
			queued: queued, now: now, window: DefaultStuckWindow, interval: steerInterval, counting: v.counting, cpu: cpu, timed: timed})
		idle = idle && h.healthy
		if !changed {
			continue
		}
		if err := prog.SetHealthy(i, h.healthy); err != nil {
			s.log.Error("could not tell the steering program a slot's health", "slot", i, "healthy", h.healthy, "err", err)
			continue
		}
		wasAway := s.steering.away[i]
		switch {
		case !h.healthy:
			// From healthy to not: steered away. (A slot starts
			// unhealthy until its first child is ready; that is not
			// steering away.)
			s.steering.away[i] = true
			s.steering.changes[i]++
			why := fmt.Sprintf("%d connection(s) queued and no accept for %v", queued, DefaultStuckWindow)
			if !v.counting {
				why = fmt.Sprintf("%d connection(s) queued, and neither the queue went down nor its processes used CPU for %v",
					queued, DefaultStuckWindow)
			}
			switch {
			case v.hung && !v.ready:
				why = "its child missed its watchdog"
			case !v.ready:
				why = "no ready child"
			}
			s.log.Warn("steering new connections away from slot", "slot", i, "reason", why)
			s.canaryUnhealthy(i, why)
		case wasAway:
			s.steering.away[i] = false
			// probe: the slot shows no progress since its rescue; it
			// is given connections to see whether its child resumed.
			s.log.Info("slot takes new connections again", "slot", i, "probe", h.probing())
		}
	}
}

// programWatch notices that the group's steering program was replaced or
// detached, by a child that could (the spawner's seccomp filter forbids
// it; see seccomp_linux.go) or anyone holding one of the group's sockets.
// The kernel says which program a group runs to no one, but the program
// counts its runs: every connection accepted from the group ran it first,
// unless it was queued or in its handshake when the count was taken. So
// from a baseline on, the connections the address's children accept
// (their counter pages) may exceed the program's runs only by what was
// queued then and a slack for the handshakes in flight; more means the
// program no longer chooses. Children that do not count their accepts
// show nothing, and a child that inflates its count raises a false
// alarm, whose only effect is the log line and attaching the program
// again.
type programWatch struct {
	started  bool
	runs     uint64         // the program's runs at the baseline
	accepted uint64         // accepts of the address's children since
	allowed  uint64         // what accepted may exceed runs by
	seen     map[int]uint64 // each child's accepts at the last look, by pid
	noticed  uint64         // times the program was found gone
}

// watchSlack is the handshakes in flight a baseline may miss.
const watchSlack = 128

// watchProgram takes the program's runs and the address's accepts, and
// attaches the program again when the accepts outrun it. It returns the
// program's runs, if they could be read.
func (s *Supervisor) watchProgram(prog *steer.Steerer, addr string, slots int) (runs uint64, ok bool) {
	w := &s.steering.watch
	seen := make(map[int]uint64)
	var grew uint64
	for pid, c := range s.children {
		if !s.steeredSocket(c.gen) {
			continue
		}
		n := c.steerAccepts()
		seen[pid] = n
		if last, ok := w.seen[pid]; !ok || n > last {
			grew += n - min(last, n)
		}
	}
	// Read after the accepts: each of those connections ran the program,
	// if it did, before it was queued, so before this.
	runs, err := prog.Runs()
	if err != nil {
		return 0, false
	}
	if !w.started {
		var queued uint64
		for i := range slots {
			q, _ := s.slotQueue(i)
			queued += uint64(q)
		}
		*w = programWatch{started: true, runs: runs, allowed: queued + watchSlack, seen: seen, noticed: w.noticed}
		return runs, true
	}
	w.seen = seen
	w.accepted += grew
	if w.accepted <= runs-w.runs+w.allowed {
		return runs, true
	}
	w.noticed++
	s.log.Error("the group's steering program no longer chooses where connections go: a process holding one of its sockets replaced or detached it (SO_ATTACH_REUSEPORT_*, SO_DETACH_REUSEPORT_BPF); attaching it again",
		"listen", addr, "accepted", w.accepted, "program_saw", runs-w.runs, "times", w.noticed)
	w.started = false
	fd, err := s.sockets.fd(addr, 0)
	if s.cur.cfg.Sockets != SocketsMaster {
		if fd, err = s.taken.anyFD(addr), nil; fd < 0 {
			err = fmt.Errorf("no listener of the group held")
		}
	}
	if err == nil {
		err = prog.Attach(fd)
	}
	if err != nil {
		s.log.Error("could not attach the steering program again", "listen", addr, "err", err)
	}
	return runs, false // the program missed connections: not idle
}
