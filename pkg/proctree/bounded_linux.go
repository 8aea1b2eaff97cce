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
	return boundedCall(timeout, fn, nil)
}

// boundedCall is bounded for a result of any type. A result that fn
// returns without error after the caller has given up is passed to
// discard, if not nil, to release what it holds (a descriptor): nobody
// else will.
func boundedCall[T any](timeout time.Duration, fn func() (T, error), discard func(T)) (T, error) {
	var zero T
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case inspections <- struct{}{}:
	case <-timer.C:
		return zero, fmt.Errorf("no free inspection slot in %v: %w", timeout, os.ErrDeadlineExceeded)
	}
	type result struct {
		v   T
		err error
	}
	// Unbuffered, with gaveUp as the way out: a result is either received
	// by the caller or discarded by fn's goroutine, never both, never
	// neither, and the goroutine never blocks for good.
	done := make(chan result)
	gaveUp := make(chan struct{})
	go func() {
		v, err := fn()
		<-inspections // before answering: the caller's next call may need it
		select {
		case done <- result{v, err}:
		case <-gaveUp:
			if err == nil && discard != nil {
				discard(v)
			}
		}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-timer.C:
		close(gaveUp)
		return zero, fmt.Errorf("no answer in %v: %w", timeout, os.ErrDeadlineExceeded)
	}
}
