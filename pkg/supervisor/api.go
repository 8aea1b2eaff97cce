package supervisor

import (
	"context"
	"fmt"

	"github.com/prefork/prefork/pkg/metrics"
)

// The public API. Every request is a call run on the loop, which owns the
// state; the answer comes back on a channel of one, so the loop never
// waits for a caller that has gone.

// ask runs question on the loop and waits for its answer, for the loop's
// end or for ctx. question gets the reply channel: it answers at once, or
// keeps the channel and answers later (a reload, when it ends).
func ask[T any](s *Supervisor, ctx context.Context, question func(reply chan<- T)) (T, error) {
	reply := make(chan T, 1)
	var zero T
	select {
	case s.events <- call(func() { question(reply) }):
	case <-s.quit:
		return zero, ErrNotRunning
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case r := <-reply:
		return r, nil
	case <-s.quit:
		return zero, ErrNotRunning
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// answer is a question answered at once with f's result.
func answer[T any](f func() T) func(chan<- T) {
	return func(reply chan<- T) { reply <- f() }
}

// Stop asks for a stop; it returns at once. A graceful stop can be
// escalated to a fast one.
func (s *Supervisor) Stop(mode StopMode) {
	// Seen by an upgrade about to exec, which would otherwise lose it.
	s.stopAsked.Store(true)
	s.send(stopRequest{mode: mode})
}

// RequestReload asks for a reload and returns at once (SIGHUP).
func (s *Supervisor) RequestReload() { s.send(call(func() { s.requestReload(nil) })) }

// Reload runs a reload and waits for its outcome, or for ctx.
func (s *Supervisor) Reload(ctx context.Context) ReloadResult {
	return s.ReloadWith(ctx, ReloadOptions{})
}

// ReloadWith runs a reload with o over the configuration's rollout
// settings, and waits for its outcome, or for ctx.
func (s *Supervisor) ReloadWith(ctx context.Context, o ReloadOptions) ReloadResult {
	if err := o.Check(); err != nil {
		return ReloadResult{Err: fmt.Errorf("%w: %w", ErrReloadRejected, err)}
	}
	r, err := ask(s, ctx, func(reply chan<- ReloadResult) { s.requestReloadWith(reply, o) })
	if err != nil {
		return ReloadResult{Err: err}
	}
	return r
}

// RequestUpgrade asks for an upgrade in place to the master's own
// binary and returns at once (SIGUSR2); the log says how it went.
func (s *Supervisor) RequestUpgrade() { s.send(call(func() { s.requestUpgrade("", nil) })) }

// Upgrade checks binary ("": the master's own path) and, if it passes,
// returns a result whose Answered lets the exec in its place go ahead;
// else why not. The caller must call Answered once it has said so.
func (s *Supervisor) Upgrade(ctx context.Context, binary string) UpgradeResult {
	r, err := ask(s, ctx, func(reply chan<- UpgradeResult) { s.requestUpgrade(binary, reply) })
	if err != nil {
		return UpgradeResult{Err: err}
	}
	return r
}

// Status returns a snapshot of the children, sorted by slot.
func (s *Supervisor) Status() (Status, error) {
	return ask(s, context.Background(), answer(s.status))
}

// Snapshot returns the state the metrics are made of, taken by the loop.
func (s *Supervisor) Snapshot() (metrics.Snapshot, error) {
	return ask(s, context.Background(), answer(s.snapshot))
}

// Scale sets the number of workers of the serving generation live: new
// slots get a child at once; the highest slots are drained when it goes
// down. It returns once the change is made (children started or told to
// drain).
func (s *Supervisor) Scale(workers int) ScaleResult {
	return s.scale(func() int { return workers })
}

// ScaleBy changes the number of workers by delta (SIGTTIN: +1, SIGTTOU: -1).
func (s *Supervisor) ScaleBy(delta int) ScaleResult {
	return s.scale(func() int { return s.cur.cfg.Workers + delta })
}

func (s *Supervisor) scale(target func() int) ScaleResult {
	r, err := ask(s, context.Background(), answer(func() ScaleResult { return s.rescale(target()) }))
	if err != nil {
		return ScaleResult{Err: err}
	}
	return r
}

// whyNotReady returns why not every slot has a ready child ("" when all
// have one), or "stopping".
func (s *Supervisor) whyNotReady(ctx context.Context) string {
	why, err := ask(s, ctx, answer(s.unreadySlots))
	if err != nil {
		return "stopping"
	}
	return why
}
