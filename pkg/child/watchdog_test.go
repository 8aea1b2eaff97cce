package child

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The pinger's timing follows the interval: a tick every half, and a
// quarter for the check.
func TestNewPingerTiming(t *testing.T) {
	p := newPinger(100*time.Millisecond, nil, nil, nil)
	if p.period != 50*time.Millisecond || p.budget != 25*time.Millisecond {
		t.Errorf("period %v budget %v, want 50ms and 25ms", p.period, p.budget)
	}
	p = newPinger(time.Nanosecond, nil, nil, nil) // a Ticker panics on zero
	if p.period <= 0 || p.budget <= 0 {
		t.Errorf("period %v budget %v, want both positive", p.period, p.budget)
	}
}

// fixedCheck returns a pinger's check loader that always yields check.
func fixedCheck(check func(context.Context) error) func() func(context.Context) error {
	return func() func(context.Context) error { return check }
}

// A check that blocks past its budget counts as failing, and no second
// check starts while it runs; its late answer is used once it comes.
func TestPingerCheckBound(t *testing.T) {
	release := make(chan struct{})
	var calls, running, maxRunning atomic.Int32
	check := func(ctx context.Context) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		<-release // a deadlock that ignores ctx, as real ones do
		return nil
	}
	p := newPinger(400*time.Millisecond, fixedCheck(check), nil, nil)
	for i := range 3 {
		start := time.Now()
		err := p.healthy()
		if err == nil || !strings.Contains(err.Error(), "still running") {
			t.Fatalf("healthy #%d = %v, want a still-running error", i, err)
		}
		if took := time.Since(start); took < p.budget {
			t.Errorf("healthy #%d gave up after %v, before the budget of %v", i, took, p.budget)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("check called %d times while one was blocked, want 1", got)
	}
	close(release)
	if err := p.healthy(); err != nil {
		t.Fatalf("healthy after the blocked check returned nil: %v", err)
	}
	if err := p.healthy(); err != nil {
		t.Fatalf("healthy with a fresh check: %v", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("check called %d times, want 2", got)
	}
	if got := maxRunning.Load(); got != 1 {
		t.Errorf("%d checks ran at once, want 1", got)
	}
}

// A check sees a deadline of the budget, so one that honours ctx returns
// in time.
func TestPingerCheckDeadline(t *testing.T) {
	check := func(ctx context.Context) error {
		deadline, ok := ctx.Deadline()
		if !ok {
			return errors.New("no deadline")
		}
		if left := time.Until(deadline); left > 25*time.Millisecond {
			return errors.New("deadline beyond the budget")
		}
		<-ctx.Done()
		return ctx.Err()
	}
	p := newPinger(100*time.Millisecond, fixedCheck(check), nil, nil)
	err := p.healthy()
	if !errors.Is(err, context.DeadlineExceeded) && (err == nil || !strings.Contains(err.Error(), "still running")) {
		t.Fatalf("healthy = %v, want the deadline or still-running error", err)
	}
}

// tick pings only while the check passes and writes one stderr line per
// failing streak.
func TestPingerTick(t *testing.T) {
	var fail atomic.Bool
	check := func(context.Context) error {
		if fail.Load() {
			return errors.New("database unreachable")
		}
		return nil
	}
	var pings int
	var stderr strings.Builder
	p := newPinger(time.Second, fixedCheck(check), func() error { pings++; return nil }, &stderr)
	steps := []struct {
		fail      bool
		wantPings int
		wantLines int
	}{
		{fail: false, wantPings: 1},
		{fail: true, wantPings: 1, wantLines: 1},
		{fail: true, wantPings: 1, wantLines: 1}, // the same streak: quiet
		{fail: false, wantPings: 2, wantLines: 1},
		{fail: true, wantPings: 2, wantLines: 2}, // a new streak
	}
	for i, s := range steps {
		fail.Store(s.fail)
		p.tick()
		lines := strings.Count(stderr.String(), "\n")
		if pings != s.wantPings || lines != s.wantLines {
			t.Fatalf("after tick %d: %d pings, %d stderr lines; want %d and %d (stderr %q)",
				i, pings, lines, s.wantPings, s.wantLines, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "database unreachable") {
		t.Errorf("stderr %q does not name the check's error", stderr.String())
	}
}

// Without a check every tick pings, and a failed send is not reported.
func TestPingerWithoutCheck(t *testing.T) {
	var pings int
	var stderr strings.Builder
	p := newPinger(time.Second, fixedCheck(nil), func() error { pings++; return errors.New("gone") }, &stderr)
	p.tick()
	p.tick()
	if pings != 2 || stderr.Len() != 0 {
		t.Errorf("%d pings, stderr %q; want 2 and nothing", pings, stderr.String())
	}
}

// SetWatchdogCheck replaces the check and nil removes it.
func TestSetWatchdogCheck(t *testing.T) {
	t.Cleanup(func() { SetWatchdogCheck(nil) })
	if currentCheck() != nil {
		t.Fatal("a check is set before any call")
	}
	errSick := errors.New("sick")
	SetWatchdogCheck(func(context.Context) error { return errSick })
	if c := currentCheck(); c == nil || c(context.Background()) != errSick {
		t.Fatal("the check set is not the current one")
	}
	SetWatchdogCheck(nil)
	if currentCheck() != nil {
		t.Fatal("SetWatchdogCheck(nil) left a check")
	}
}
