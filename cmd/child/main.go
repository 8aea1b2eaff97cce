// Command child is prefork's reference child: an HTTP server built on
// pkg/child that answers every request with 200 "ok\n", GET /whoami with
// its slot, generation and pid as JSON, and delays any answer by
// ?sleep=DURATION (for drain tests). It drains on SIGTERM as SPEC says and
// exits 0; on a startup error it prints one line and exits 1.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("child failed", "pid", os.Getpid(), "err", err)
		os.Exit(1)
	}
}

// run serves until the drain is over.
func run(log *slog.Logger) error {
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
	srv := &http.Server{
		Handler:           newHandler(info, os.Getpid()),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- child.Serve(srv, ln) }()
	if err := child.Ready(); err != nil {
		return err
	}
	log.Info("child serving", "addr", ln.Addr().String(), "slot", info.Slot,
		"generation", info.Generation, "pid", os.Getpid())
	err = <-served
	if errors.Is(err, child.ErrDrainTimeout) {
		// The master's deadline, not a failure: SPEC wants exit 0.
		log.Warn("child drained at the deadline", "pid", os.Getpid(), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("child drained", "pid", os.Getpid())
	return nil
}
