package counters

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
)

// Layout of the page (see the package comment).
const (
	// AcceptsOffset is the offset of the accepted-connections counter,
	// the total over every stream listener.
	AcceptsOffset = 0
	// DatagramsOffset is the offset of the received-datagrams counter,
	// the total over every packet listener.
	DatagramsOffset = 8
	// ListenersOffset is the offset of listener 0's counter; listener i's
	// is at ListenersOffset + 8*i.
	ListenersOffset = 64
	// MaxListeners is how many listeners have a counter of their own.
	MaxListeners = 64
	// MinSize is the smallest page a Counter accepts: the whole layout.
	// A page from NewPage is one memory page, far larger.
	MinSize = ListenersOffset + 8*MaxListeners
)

// words is the layout seen as uint64s; a page is at least MinSize bytes.
type words [MinSize / 8]uint64

// Indexes into words.
const (
	acceptsWord   = AcceptsOffset / 8
	datagramsWord = DatagramsOffset / 8
	listenersWord = ListenersOffset / 8
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
// *os.File (TRAPS 4, 5), and closes it exactly once. Its loads may be
// called from any goroutine, but not concurrently with or after Close.
type Page struct {
	fd  int // -1 once closed
	mem []byte
	w   *words // nil once closed
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

// Accepts returns the child's count of accepted connections over all its
// stream listeners, loaded atomically; 0 once closed, and for a nil Page
// (a child that has none).
func (p *Page) Accepts() uint64 {
	return p.load(acceptsWord)
}

// Datagrams returns the child's count of received datagrams over all its
// packet listeners, loaded atomically; 0 once closed, and for a nil Page.
func (p *Page) Datagrams() uint64 {
	return p.load(datagramsWord)
}

// Listener returns the count of listener i (its index in
// PREFORK_LISTENERS): accepted connections for a stream listener,
// datagrams for a packet one. It is 0 for i outside 0..MaxListeners-1,
// once closed, and for a nil Page.
func (p *Page) Listener(i int) uint64 {
	if uint(i) >= MaxListeners {
		return 0
	}
	return p.load(listenersWord + i)
}

// load loads word i atomically, or returns 0 without a mapping.
func (p *Page) load(i int) uint64 {
	if p == nil || p.w == nil {
		return 0
	}
	return atomic.LoadUint64(&p.w[i])
}

// Counter is the child's side of a counter page. Its methods may be
// called from any goroutine, but not concurrently with or after Close.
// Counting costs one or two atomic adds: no syscall, no allocation.
type Counter struct {
	mem []byte
	w   *words
}

// Inc counts one accepted connection in the total only: one atomic add.
// It is Accept without a listener, kept for callers that have one.
func (c *Counter) Inc() { atomic.AddUint64(&c.w[acceptsWord], 1) }

// Accept counts one connection accepted on listener i: in listener i's
// counter, then in the total of accepts. For i outside 0..MaxListeners-1
// only the total counts.
//
// The order is the protocol: a reader that loads the total first, then
// the listeners' counters, finds every accept of that total on its
// listener, so that what the total has beyond the listeners is only what
// Inc counted (a child that names no listener).
func (c *Counter) Accept(i int) {
	if uint(i) < MaxListeners {
		atomic.AddUint64(&c.w[listenersWord+i], 1)
	}
	atomic.AddUint64(&c.w[acceptsWord], 1)
}

// Datagram counts one datagram received on listener i: in listener i's
// counter, then in the total of datagrams (the order of Accept). For i
// outside 0..MaxListeners-1 only the total counts.
func (c *Counter) Datagram(i int) {
	if uint(i) < MaxListeners {
		atomic.AddUint64(&c.w[listenersWord+i], 1)
	}
	atomic.AddUint64(&c.w[datagramsWord], 1)
}

// Load returns the total of accepted connections, loaded atomically.
func (c *Counter) Load() uint64 { return atomic.LoadUint64(&c.w[acceptsWord]) }
