// Command child is prefork's reference child: an HTTP server built on
// pkg/child that answers every request with 200 "ok\n", GET /whoami with
// its slot, generation and pid as JSON, and delays any answer by
// ?sleep=DURATION (for drain tests). It drains on SIGTERM as the child contract says and
// exits 0; on a startup error it prints one line and exits 1.
//
// Under a master's --watchdog it pings through pkg/child. For the
// watchdog's own tests, -hang-after DURATION (or CHILD_HANG_AFTER; the
// flag wins) simulates a deadlock that long after Ready: requests and the
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
	child.Draining()
	ln, err := child.Listen(context.Background())
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
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- child.Serve(srv, ln) }()
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
	log.Info("child serving", "addr", ln.Addr().String(), "slot", info.Slot,
		"generation", info.Generation, "pid", os.Getpid())
	err = <-served
	if errors.Is(err, child.ErrDrainTimeout) {
		// The master's deadline, not a failure: the contract wants exit 0.
		log.Warn("child drained at the deadline", "pid", os.Getpid(), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("child drained", "pid", os.Getpid())
	return nil
}
