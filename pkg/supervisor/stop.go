package supervisor

import "golang.org/x/sys/unix"

// stop stops every child: drained (the stop signal, then SIGKILL at the drain
// timeout) or killed at once. The loop ends once the last is reaped.
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
	for _, g := range []*generation{s.cur, s.reload.next} {
		if g == nil {
			continue
		}
		for _, sl := range g.slots {
			sl.cancelRestart()
		}
	}
	s.abortReload()
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
	s.taken.closeAll()
}

// drainTimedOut kills a child still draining at the drain timeout.
func (s *Supervisor) drainTimedOut(c *child) {
	if !s.live(c) {
		return
	}
	if s.stopping != 0 {
		s.drainCut = true
	}
	s.log.Warn("child still draining at the drain timeout; killing it", "slot", c.slot,
		"generation", c.gen.number, "pid", c.pid, "drain_timeout_ms", millis(c.gen.cfg.DrainTimeout))
	s.kill(c, unix.SIGKILL)
}
