// Command child is prefork's reference child, built on pkg/child. It
// serves every listener the master gives it (PREFORK_LISTENERS; one,
// "default", when it gives none): on a stream listener, HTTP that answers
// every request with 200 "ok\n", GET /whoami with its slot, generation and
// pid as JSON, and delays any answer by ?sleep=DURATION (for drain tests);
// on a UDP listener, every datagram with that same JSON, sent back to its
// sender. It is ready once every listener is taken and served. It drains
// on SIGTERM as the child contract says (its UDP listeners stop reading at
// once) and exits 0; on a startup error it prints one line and exits 1.
// It logs one "child serving" line per listener, with its address.
//
// Under a master's --watchdog it pings through pkg/child. For the
// watchdog's own tests, -hang-after DURATION (or CHILD_HANG_AFTER; the
// flag wins) simulates a deadlock that long after Ready: HTTP requests and the
// watchdog check block forever, so the pings stop while the process stays
// alive. The default is no hang.
//
// For rollout tests, -crash-after DURATION (CHILD_CRASH_AFTER) makes the
// child exit with code 1 that long after Ready, with a line on stderr, as
// a build that crashes under traffic would; and -ballast SIZE
// (CHILD_BALLAST) allocates and touches SIZE bytes before Ready and keeps
// them, so that the children's resident memory is known. Both are off by
// default.
//
// Usage:
//
//	child [-hang-after DURATION] [-crash-after DURATION] [-ballast SIZE]
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts, err := parseOptions(os.Args[1:], os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(os.Stderr)
		return
	}
	if err == nil {
		err = run(log, opts)
	}
	if err != nil {
		log.Error("child failed", "pid", os.Getpid(), "err", err)
		os.Exit(1)
	}
}

// run serves until the drain is over.
func run(log *slog.Logger, opts options) error {
	info, err := child.Env()
	if err != nil {
		return err
	}
	// Install the SIGTERM handler before anything can send it: a SIGTERM
	// between Ready and the first call would take the default action and
	// reset every accepted connection.
	drain := child.Draining()
	lns, err := takeListeners(context.Background())
	if err != nil {
		return err
	}
	// Before Ready: a child the master sees ready has its full size.
	ballast := newBallast(opts.ballast)
	defer runtime.KeepAlive(ballast)
	handler := newHandler(info, os.Getpid())
	var stuck *hang
	if opts.hangAfter > 0 {
		stuck = &hang{}
		handler = stuck.wrap(handler)
		child.SetWatchdogCheck(stuck.check)
	}
	answer := whoamiBody(info, os.Getpid())
	served := make(chan error, len(lns))
	for _, l := range lns {
		if l.packet != nil {
			go func() { served <- serveUDP(l.packet, answer, drain) }()
			continue
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() { served <- child.Serve(srv, l.stream) }()
	}
	if err := child.Ready(); err != nil {
		return err
	}
	if stuck != nil {
		// Counted from Ready, so a slow start cannot hang a child before
		// the master has seen it ready and pinging.
		time.AfterFunc(opts.hangAfter, func() {
			log.Warn("child hangs now, as -hang-after asked", "pid", os.Getpid())
			stuck.start()
		})
	}
	if opts.crashAfter > 0 {
		// Counted from Ready, as -hang-after: the master has seen the
		// child ready, so the exit is a crash of a serving child.
		time.AfterFunc(opts.crashAfter, func() {
			log.Error("child crashes now, as -crash-after asked", "pid", os.Getpid())
			os.Exit(1)
		})
	}
	for _, l := range lns {
		log.Info("child serving", "addr", l.addr().String(), "listener", l.name, "network", l.network,
			"slot", info.Slot, "generation", info.Generation, "pid", os.Getpid())
	}
	return waitServed(log, served, len(lns))
}

// waitServed waits for every listener's server to return after the
// drain. The first failure is returned at once: the process then exits 1
// without waiting for the others.
func waitServed(log *slog.Logger, served <-chan error, n int) error {
	cut := false
	for range n {
		err := <-served
		if errors.Is(err, child.ErrDrainTimeout) {
			cut = true
			continue
		}
		if err != nil {
			return err
		}
	}
	if cut {
		// The master's deadline, not a failure: the contract wants exit 0.
		log.Warn("child drained at the deadline", "pid", os.Getpid(), "err", child.ErrDrainTimeout)
		return nil
	}
	log.Info("child drained", "pid", os.Getpid())
	return nil
}

// listener is one taken listener of the child: a stream one, served
// over HTTP, or a UDP one.
type listener struct {
	name    string
	network string
	stream  net.Listener
	packet  *child.PacketConn
}

// addr is the listener's local address.
func (l listener) addr() net.Addr {
	if l.packet != nil {
		return l.packet.LocalAddr()
	}
	return l.stream.Addr()
}

// takeListeners takes every listener of the child, in order. The process
// exits on an error, so those already taken are left to it.
func takeListeners(ctx context.Context) ([]listener, error) {
	named, err := child.Listeners()
	if err != nil {
		return nil, err
	}
	lns := make([]listener, 0, len(named))
	for _, n := range named {
		l := listener{name: n.Name, network: n.Network}
		if n.Network == "udp" {
			pc, err := child.ListenPacket(ctx, n.Name)
			if err != nil {
				return nil, err
			}
			l.packet = pc.(*child.PacketConn)
		} else {
			if l.stream, err = child.ListenNamed(ctx, n.Name); err != nil {
				return nil, err
			}
		}
		lns = append(lns, l)
	}
	return lns, nil
}
