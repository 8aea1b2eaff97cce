package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

func TestHandler(t *testing.T) {
	h := newHandler(child.Info{Slot: 3, Generation: 7, Workers: 8, Supervised: true}, 4242)
	tests := []struct {
		name       string
		method     string
		target     string
		wantStatus int
		wantBody   string
		wantType   string
		minElapsed time.Duration
	}{
		{name: "root", method: "GET", target: "/", wantStatus: 200, wantBody: "ok\n"},
		{name: "any path", method: "POST", target: "/a/b?c=d", wantStatus: 200, wantBody: "ok\n"},
		{name: "whoami", method: "GET", target: "/whoami", wantStatus: 200,
			wantBody: `{"slot":3,"generation":7,"pid":4242}` + "\n", wantType: "application/json"},
		{name: "whoami needs GET", method: "POST", target: "/whoami", wantStatus: 200, wantBody: "ok\n"},
		{name: "sleep", method: "GET", target: "/?sleep=20ms", wantStatus: 200, wantBody: "ok\n", minElapsed: 20 * time.Millisecond},
		{name: "sleep on whoami", method: "GET", target: "/whoami?sleep=1ms", wantStatus: 200,
			wantBody: `{"slot":3,"generation":7,"pid":4242}` + "\n", wantType: "application/json", minElapsed: time.Millisecond},
		{name: "zero sleep", method: "GET", target: "/?sleep=0s", wantStatus: 200, wantBody: "ok\n"},
		{name: "bad sleep", method: "GET", target: "/?sleep=soon", wantStatus: 400},
		{name: "sleep without unit", method: "GET", target: "/?sleep=5", wantStatus: 400},
		{name: "negative sleep", method: "GET", target: "/?sleep=-1s", wantStatus: 400},
		{name: "sleep over the cap", method: "GET", target: "/?sleep=11m", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			elapsed := time.Since(start)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Errorf("body %q, want %q", rec.Body.String(), tt.wantBody)
			}
			if tt.wantType != "" && rec.Header().Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type %q, want %q", rec.Header().Get("Content-Type"), tt.wantType)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("answered after %v, want at least %v", elapsed, tt.minElapsed)
			}
		})
	}
}

// The whoami fields decode under the names the child contract gives them.
func TestWhoamiFields(t *testing.T) {
	h := newHandler(child.Info{Slot: 1, Generation: 2}, 99)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/whoami", nil))
	var got map[string]int
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"slot": 1, "generation": 2, "pid": 99}
	if len(got) != len(want) {
		t.Fatalf("whoami %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("whoami[%q] = %d, want %d", k, got[k], v)
		}
	}
}

// A sleeping request whose client goes away stops at once and writes
// nothing.
func TestSleepEndsWithClient(t *testing.T) {
	h := newHandler(child.Info{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/?sleep=10m", nil).WithContext(ctx))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("sleep did not end with the request's context")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("wrote %q for a gone client", rec.Body.String())
	}
}
