package supervisor

import (
	"sync/atomic"
	"testing"
)

// The snapshot behind prefork_log_dropped_total reads Options.LogDropped
// at scrape time, and 0 without it.
func TestSnapshotLogDropped(t *testing.T) {
	t.Parallel()
	var dropped atomic.Uint64
	h := newHarness(t, testConfig(t, 1), func(_ *env, o *Options) { o.LogDropped = dropped.Load })
	dropped.Store(7)
	if snap, err := h.s.Snapshot(); err != nil || snap.LogDropped != 7 {
		t.Errorf("Snapshot: LogDropped %d, %v; want 7", snap.LogDropped, err)
	}
	h = newHarness(t, testConfig(t, 1))
	if snap, err := h.s.Snapshot(); err != nil || snap.LogDropped != 0 {
		t.Errorf("Snapshot without LogDropped: %d, %v; want 0", snap.LogDropped, err)
	}
}
