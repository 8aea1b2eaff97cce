package lineprefix

import (
	"io"
	"sync"
)

// Shared returns a writer that passes each Write to w whole, one at a time,
// for the Copiers of all children (and the master's own logger, if it
// writes lines to the same place) to share: as a Copier writes one whole
// prefixed line per Write, their lines never interleave within a line.
func Shared(w io.Writer) io.Writer {
	return &shared{w: w}
}

type shared struct {
	mu sync.Mutex
	w  io.Writer
}

// Write holds the lock for the whole of p: an io.Writer writes all of p or
// fails, so p is never split by another writer's Write.
func (s *shared) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
