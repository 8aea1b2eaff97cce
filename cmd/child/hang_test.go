package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

// stillBlocked is how long a test watches a blocked call before it takes
// the call to be stuck; only a lower bound, never a deadline for success.
const stillBlocked = 100 * time.Millisecond

// Before the hang, requests and the check pass; after it, both block
// until the test releases the gate, as they would forever in a child.
func TestHang(t *testing.T) {
	h := &hang{}
	handler := h.wrap(newHandler(child.Info{}, 1))
	get := func() <-chan int {
		done := make(chan int, 1)
		go func() {
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			done <- rec.Code
		}()
		return done
	}
	check := func() <-chan error {
		done := make(chan error, 1)
		go func() { done <- h.check(context.Background()) }()
		return done
	}
	if code := wait(t, "request before the hang", get()); code != http.StatusOK {
		t.Fatalf("status %d before the hang, want 200", code)
	}
	if err := wait(t, "check before the hang", check()); err != nil {
		t.Fatalf("check before the hang: %v", err)
	}

	h.start()
	request, checked := get(), check()
	select {
	case code := <-request:
		t.Fatalf("a request was answered (%d) during the hang", code)
	case err := <-checked:
		t.Fatalf("the check returned (%v) during the hang", err)
	case <-time.After(stillBlocked):
	}
	h.mu.Unlock() // only a test can end the hang
	if code := wait(t, "request after release", request); code != http.StatusOK {
		t.Errorf("status %d after release, want 200", code)
	}
	if err := wait(t, "check after release", checked); err != nil {
		t.Errorf("check after release: %v", err)
	}
}

// wait receives one value from ch or fails the test.
func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
