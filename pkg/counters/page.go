package counters

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
)

// Layout of the page (see the package comment).
const (
	// AcceptsOffset is the offset of the accepted-connections counter.
	AcceptsOffset = 0
	// MinSize is the smallest page a Counter accepts: one uint64.
	MinSize = AcceptsOffset + 8
)

var (
	// ErrUnsupported is returned off Linux.
	ErrUnsupported = errors.New("counters: counter page unsupported on this platform")
	// ErrBigEndian is returned on a big-endian machine, where a native
	// atomic add would not produce the little-endian layout.
	ErrBigEndian = errors.New("counters: counter page needs a little-endian machine")
	// ErrTooSmall is returned by OpenCounter for a file under MinSize bytes.
	ErrTooSmall = errors.New("counters: counter page too small")
)

// littleEndian reports whether native atomics write the page's layout.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Page is the master's side of a counter page: a sealed memfd mapped
// read-write. It owns its descriptor, a plain int never wrapped in an
// *os.File (TRAPS 4, 5), and closes it exactly once. Accepts may be called
// from any goroutine, but not concurrently with or after Close.
type Page struct {
	fd      int // -1 once closed
	mem     []byte
	accepts *uint64
}

// FD returns the memfd, close-on-exec; -1 once closed (or for a nil
// Page). Pass it to a child through syscall.ForkExec's Files, which dups it
// without close-on-exec, and name its number there in PREFORK_COUNTERS_FD.
func (p *Page) FD() int {
	if p == nil {
		return -1
	}
	return p.fd
}

// Accepts returns the child's count of accepted connections, loaded
// atomically; 0 once closed, and for a nil Page (a child that has none).
func (p *Page) Accepts() uint64 {
	if p == nil || p.accepts == nil {
		return 0
	}
	return atomic.LoadUint64(p.accepts)
}

// Counter is the child's side of a counter page. Inc and Load may be
// called from any goroutine, but not concurrently with or after Close.
type Counter struct {
	mem     []byte
	accepts *uint64
}

// Inc counts one accepted connection: one atomic add, no syscall.
func (c *Counter) Inc() { atomic.AddUint64(c.accepts, 1) }

// Load returns the count, loaded atomically.
func (c *Counter) Load() uint64 { return atomic.LoadUint64(c.accepts) }
