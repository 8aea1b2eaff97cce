package supervisor

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/prefork/prefork/pkg/counters"
)

// startServing starts the child of a slot of the serving generation; a
// failure to start counts against the slot like an exit.
func (s *Supervisor) startServing(slotIndex int) {
	sl := s.cur.slots[slotIndex]
	c, err := s.startChild(s.cur, slotIndex)
	if err != nil {
		why := "failed to start: " + err.Error()
		var said interface{ saidOnce() }
		if sl.lastExit == why || errors.As(err, &said) {
			// A slot that cannot start (a binary gone) says so once,
			// not at every retry; a fork refused for a process limit
			// was said once for every slot (osProcs.sayLimit).
			s.log.Debug("slot still fails to start", "slot", slotIndex, "generation", s.cur.number, "err", err)
		} else {
			s.log.Error("child failed to start", "slot", slotIndex, "generation", s.cur.number, "err", err)
		}
		sl.lastExit = why
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
	names := make([]string, len(cfg.Listen))
	for i, l := range cfg.Listen {
		names[i] = l.Name
	}
	own := map[string]string{
		"PREFORK_LISTEN":        cfg.Listen.first().key(),
		"PREFORK_LISTENERS":     strings.Join(names, ","),
		"PREFORK_SLOT":          strconv.Itoa(slotIndex),
		"PREFORK_GENERATION":    strconv.Itoa(g.number),
		"PREFORK_WORKERS":       strconv.Itoa(cfg.Workers),
		"PREFORK_DRAIN_TIMEOUT": cfg.DrainTimeout.String(),
		"NOTIFY_SOCKET":         s.notify.addr,
	}
	for _, l := range cfg.Listen {
		own[l.envName()] = l.key()
	}
	if cfg.Watchdog > 0 {
		own["WATCHDOG_USEC"] = strconv.FormatInt(cfg.Watchdog.Microseconds(), 10)
	}
	if id := g.id; id != nil && id.home != "" {
		// As login and systemd's User= do: a child of another user
		// must not write into the master's home.
		own["HOME"], own["USER"], own["LOGNAME"] = id.home, id.user, id.user
	}
	values := childValues(cfg, slotIndex, g.number)
	for k, v := range cfg.Env {
		own[k] = expand(v, values) // Validate kept the master's own out
	}
	argv := make([]string, len(g.argv))
	argv[0] = g.argv[0]
	for i, arg := range g.argv[1:] {
		argv[i+1] = expand(arg, values)
	}
	spec := spawnSpec{path: argv[0], argv: argv, id: g.id, slot: slotIndex,
		prefix: cfg.ChildOutput == OutputPrefix}
	socketFD := -1
	if cfg.Sockets == SocketsMaster {
		for i, l := range cfg.Listen {
			fd, err := s.sockets.fd(l.key(), slotIndex)
			if err != nil {
				return nil, err
			}
			// Listener i is fd 3+i, as socket activation wants.
			spec.extra = append(spec.extra, fd)
			if i == 0 {
				socketFD = fd
			}
		}
		own["LISTEN_FDS"] = strconv.Itoa(len(cfg.Listen))
		own["LISTEN_FDNAMES"] = strings.Join(names, ":")
		// LISTEN_PID must be the child's own pid, known only after the
		// fork: an exec shim sets it and execs argv (see execShimPath).
		spec.path = s.env.shim
		spec.argv = append([]string{s.self, ShimCommand}, argv...)
		own[envShimParent] = strconv.Itoa(os.Getpid())
	}
	page, err := counters.NewPage()
	if err != nil {
		// Counting is not worth a child: it serves, its accepts read 0.
		s.log.Warn("no counter page for a child; its accepts read 0", "slot", slotIndex, "err", err)
	} else {
		own["PREFORK_COUNTERS_FD"] = strconv.Itoa(3 + len(spec.extra))
		spec.extra = append(spec.extra, page.FD())
	}
	spec.env = childEnv(os.Environ(), own)
	now := s.env.clock.Now()
	if g.id != nil {
		// Heard from its first instant: it may say READY=1 before
		// start returns.
		s.gate.allowUID(int(g.id.uid))
	}
	pid, err := s.env.procs.start(spec)
	if err != nil {
		page.Close()
		return nil, err
	}
	c := &child{pid: pid, gen: g, slot: slotIndex, life: lifeStarting, started: now, page: page,
		acceptLimit: acceptLimit(cfg.MaxAccepts)}
	c.readyTimer = s.env.clock.AfterFunc(cfg.ReadyTimeout, func() { s.send(readyTimeout{c: c}) })
	s.children[pid] = c
	s.gate.add(pid)
	s.awaitReady(c, socketFD)
	s.log.Info("child started", "slot", slotIndex, "generation", g.number, "pid", pid)
	return c, nil
}
