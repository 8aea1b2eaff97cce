package supervisor

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// POST /reload hands its query's options to the reload it runs, and a
// query it refuses starts none.
func TestAdminReloadOptions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	h.readyAll(1)
	admin := h.s.adminHandler()
	if code, body := do(t, admin, "POST", "/reload?strategy=generation&max_surge=0"); code != http.StatusBadRequest ||
		!strings.Contains(body, "max_surge: 0 must be at least 1") {
		t.Errorf("POST /reload?max_surge=0 = %d %s", code, body)
	}
	h.settle()
	if n := h.logs.count("reload requested"); n != 0 || len(h.procs.live()) != 2 {
		t.Fatalf("after a refused query: %d reloads requested, %d children, want 0 and 2", n, len(h.procs.live()))
	}

	want := ReloadOptions{Strategy: StrategyGeneration, MaxSurge: 3, CanaryFor: 45 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, body := do(t, admin, "POST", "/reload?strategy=generation&max_surge=3&canary_for=45s")
		if code != http.StatusOK || !strings.Contains(body, `"generation":2`) {
			t.Errorf("POST /reload = %d %s", code, body)
		}
	}()
	h.waitFor("the reload's children", func() bool { return len(h.procs.live()) == 4 })
	h.settle()
	var got ReloadOptions
	h.onLoop(func() { got = h.s.reload.opts })
	if got != want {
		t.Errorf("the running reload's options = %+v, want %+v", got, want)
	}
	h.readyAll(2)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("POST /reload did not answer within 10 s")
	}
}
