package supervisor

import (
	"context"
	"errors"
	"time"

	"github.com/prefork/prefork/pkg/proctree"
)

// Steering in child socket mode (issue 13): each child binds its own
// listener, so the master takes a copy of it once the child is ready
// (pidfd_getfd, matched by sock_diag: proctree.TakeListener) and steers
// the group with it as it steers its own sockets in master socket mode
// (takenSet). Where a child's listener cannot be taken (a non-dumpable
// child under another uid, a master without the privilege, a server
// whose processes hold more than one listener on the address), the
// group is not steered: said once, with why.

// takeTimeout bounds the search for a child's listener: it reads /proc
// and sock_diag, which a hostile child can make slow.
const takeTimeout = 2 * time.Second

// A search that fails for a reason that may pass (no listener found yet:
// a child ready by --ready delay before it binds, one that is exiting; a
// /proc slow under load) is tried again, takeRetries times, after
// takeRetryDelay, doubling, before the group is left unsteered.
const (
	takeRetries    = 3
	takeRetryDelay = 100 * time.Millisecond
)

type (
	// took: the search for a ready child's listener ended.
	took struct {
		c       *child
		fd      int // the copy, owned by the event; -1 on error
		inode   uint64
		err     error
		attempt int // 0 for the first search
	}
	// retake: the search for c's listener is due again.
	retake struct {
		c       *child
		attempt int
	}
)

// takeListener starts the search for c's listener, if the group is to be
// steered in child socket mode.
func (s *Supervisor) takeListener(c *child) { s.takeAgain(c, 0) }

// takeAgain starts search number attempt for c's listener.
func (s *Supervisor) takeAgain(c *child, attempt int) {
	addr := c.gen.cfg.steerKey()
	if !s.taken.on || c.gen.cfg.Sockets == SocketsMaster || addr == "" || s.taken.off[addr] != "" || s.stopping != 0 {
		return
	}
	pid := c.pid
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), takeTimeout)
		defer cancel()
		fd, inode, err := s.env.observe.take(ctx, pid, addr)
		if !s.sendOr(took{c: c, fd: fd, inode: inode, err: err, attempt: attempt}) && err == nil {
			closeFD(fd)
		}
	}()
}

// tookListener steers c's slot with the copy of its listener, or turns
// steering off for the group, saying why.
func (s *Supervisor) tookListener(ev took) {
	c, addr := ev.c, ev.c.gen.cfg.steerKey()
	if ev.err != nil {
		switch {
		case !s.live(c) || c.life == lifeDraining:
		case ev.attempt < takeRetries && !errors.Is(ev.err, proctree.ErrNotAllowed) && !errors.Is(ev.err, proctree.ErrManyListeners):
			s.env.clock.AfterFunc(takeRetryDelay<<ev.attempt, func() { s.send(retake{c: c, attempt: ev.attempt + 1}) })
		default:
			s.steerOff(addr, ev.err.Error())
		}
		return
	}
	if !s.live(c) || c.life == lifeDraining || s.stopping != 0 {
		closeFD(ev.fd) // it exited or drains meanwhile: nothing to steer
		return
	}
	first := s.taken.steerers[addr] == nil
	kept, err := s.taken.add(addr, c.slot, c.pid, ev.fd, ev.inode)
	if !kept {
		closeFD(ev.fd)
	}
	if err != nil {
		s.steerOff(addr, err.Error())
		return
	}
	if first && kept {
		prog := s.taken.steerers[addr]
		s.log.Info("steering in child socket mode: the master holds a copy of each ready child's listener", "listen", addr,
			"moves_closing_queues", prog.Migrates())
		if !prog.Migrates() {
			// A kernel before 5.14: the program cannot choose for
			// migrating connections, and the sysctl decides again.
			s.taken.noMigrate = true
			s.warnMigrateReq(c.gen.cfg)
		}
	}
	if kept && s.steers(c) {
		s.syncSteerSlots()
		s.steerReady(c)
	}
}

// retook starts a search again, if its child still serves.
func (s *Supervisor) retook(ev retake) {
	if s.live(ev.c) && ev.c.life != lifeDraining {
		s.takeAgain(ev.c, ev.attempt)
	}
}

// steerOff stops steering addr's group in child socket mode, and says so
// once.
func (s *Supervisor) steerOff(addr, why string) {
	attached := s.taken.steerers[addr] != nil
	if !s.taken.turnOff(addr, why) {
		return
	}
	if !attached && !s.taken.noMigrate {
		// Never attached: the program moves no closing listener's
		// queue, which the start said it would; the sysctl decides.
		defer func() {
			s.taken.noMigrate = true
			s.warnMigrateReq(s.cur.cfg)
		}()
	}
	s.steering.follow(nil)
	s.log.Warn("steering is off in child socket mode: the master cannot hold the children's listeners; the kernel's hash alone spreads connections, and a stuck child keeps its share (--sockets master steers without taking them)",
		"listen", addr, "reason", why)
}

// takenInUse reports whether a generation of child socket mode serves
// addr: its steering program is kept for the children to come.
func (s *Supervisor) takenInUse(addr string) bool {
	for _, g := range []*generation{s.cur, s.reload.next} {
		if g != nil && g.cfg.Sockets != SocketsMaster && g.cfg.steerKey() == addr {
			return true
		}
	}
	return false
}
