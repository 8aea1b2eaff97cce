package supervisor

import (
	"testing"
)

func TestStartsEverySlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 3))
	h.wantStates("0/1:starting", "1/1:starting", "2/1:starting")
	h.readyAll(1)
	h.wantStates("0/1:ready", "1/1:ready", "2/1:ready")
}
