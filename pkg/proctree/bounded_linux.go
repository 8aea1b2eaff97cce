package proctree

import (
	"fmt"
	"os"
	"time"
)

// Some /proc reads take a lock the inspected process can hold: an epoll
// set's fdinfo its mutex (held across epoll_ctl, which may poll a file
// served by that very process over FUSE), /proc/PID/mem its memory map,
// the syscall file its exec lock. A Go goroutine blocked in such a read
// cannot be interrupted, so it is left behind, and its caller goes on.

const (
	// inspectTimeout bounds the inspection of one process by WaitsOn.
	// A healthy one takes well under a millisecond; the margin is for a
	// loaded machine, where threads wait long for a CPU.
	inspectTimeout = 500 * time.Millisecond
	// maxInspections bounds the inspections under way at once, those
	// given up on included: a process that blocks every read costs at
	// most this many threads, however long the master polls it.
	maxInspections = 32
)

// inspections holds a token per inspection under way.
var inspections = make(chan struct{}, maxInspections)

// bounded runs fn in its own goroutine and returns its result, or an
// error wrapping os.ErrDeadlineExceeded if fn has not returned within
// timeout, counting the wait for a free inspection slot.
func bounded(timeout time.Duration, fn func() (bool, error)) (bool, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case inspections <- struct{}{}:
	case <-timer.C:
		return false, fmt.Errorf("no free inspection slot in %v: %w", timeout, os.ErrDeadlineExceeded)
	}
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1) // buffered: a late fn must not block
	go func() {
		ok, err := fn()
		<-inspections // before answering: the caller's next call may need it
		done <- result{ok, err}
	}()
	select {
	case r := <-done:
		return r.ok, r.err
	case <-timer.C:
		return false, fmt.Errorf("no answer in %v: %w", timeout, os.ErrDeadlineExceeded)
	}
}
