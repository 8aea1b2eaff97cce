package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

// maxSleep bounds ?sleep so a typo cannot pin a connection for days.
const maxSleep = 10 * time.Minute

// whoami is the JSON body of GET /whoami.
type whoami struct {
	Slot       int `json:"slot"`
	Generation int `json:"generation"`
	PID        int `json:"pid"`
}

// whoamiBody is the body of GET /whoami, and of every UDP answer: the
// JSON of whoami and a newline.
func whoamiBody(info child.Info, pid int) []byte {
	body, err := json.Marshal(whoami{Slot: info.Slot, Generation: info.Generation, PID: pid})
	if err != nil {
		panic(err) // three ints always marshal
	}
	return append(body, '\n')
}

// newHandler answers every request; info and pid are fixed for the
// process, so /whoami needs no lookup per request.
func newHandler(info child.Info, pid int) http.Handler {
	me := whoamiBody(info, pid)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := r.URL.Query().Get("sleep"); s != "" {
			d, err := parseSleep(s)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if !sleep(r, d) {
				return // the client is gone; nobody reads an answer
			}
		}
		if r.Method == http.MethodGet && r.URL.Path == "/whoami" {
			w.Header().Set("Content-Type", "application/json")
			w.Write(me)
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// parseSleep reads ?sleep: a Go duration from 0 to maxSleep.
func parseSleep(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad sleep: %w", err)
	}
	if d < 0 || d > maxSleep {
		return 0, fmt.Errorf("bad sleep %q: want 0 to %v", s, maxSleep)
	}
	return d, nil
}

// sleep waits d, or less if the request's connection goes away; it
// reports whether the full time passed.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}
