package main

import (
	"context"
	"net/http"
	"sync"
)

// hang simulates a deadlock for the master's watchdog tests: every
// request and the watchdog check pass through a gate that start closes
// forever, as a lock that some goroutine never releases would. The pings
// stop while the process stays alive and keeps its listener, and requests
// hang, which is what a real deadlock looks like from outside.
//
// The gate is a read lock taken and released at once, so requests do not
// serialise on it before the hang; a child started without -hang-after
// has no gate at all.
type hang struct {
	mu sync.RWMutex
}

// pass returns at once while the gate is open, and never once it closed.
func (h *hang) pass() {
	h.mu.RLock()
	//lint:ignore SA2001 the gate guards nothing; waiting for it is the point
	h.mu.RUnlock()
}

// wrap passes every request through the gate.
func (h *hang) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.pass()
		next.ServeHTTP(w, r)
	})
}

// check is the watchdog check. It ignores ctx, as a goroutine stuck on a
// lock would; the library bounds how long it waits for the answer.
func (h *hang) check(context.Context) error {
	h.pass()
	return nil
}

// start closes the gate for good: the write lock is never released.
func (h *hang) start() {
	h.mu.Lock()
}
