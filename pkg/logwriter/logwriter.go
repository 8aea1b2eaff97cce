package logwriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSize is the buffer's size when Options.Size is not set: some
// thousands of the master's lines, enough for a burst (a reload of many
// workers) while the reader is slow, small next to the master's memory.
const DefaultSize = 1 << 20

// NoticeMessage is the message of the notice SlogNotice formats.
const NoticeMessage = "log lines dropped: the log output was blocked or failing"

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("log writer closed")

// Dropped counts records dropped, and their bytes.
type Dropped struct {
	Lines uint64
	Bytes uint64
}

func (d *Dropped) add(lines, bytes uint64) {
	d.Lines += lines
	d.Bytes += bytes
}

// Options tune a Writer; the zero value is valid.
type Options struct {
	// Size is the most bytes of records held, waiting or being written;
	// 0 means DefaultSize. A record longer than Size is always dropped.
	Size int
	// Notice formats the notice written where records were dropped, a
	// whole line with its newline; nil writes a line of plain text.
	Notice func(Dropped) []byte
}

// Writer is a bounded, non-blocking io.Writer of records (see the package
// documentation). Make one with New; it is safe for concurrent use.
type Writer struct {
	dst    io.Writer
	size   int
	notice func(Dropped) []byte

	wake chan struct{} // buffered by one: there are records, or closing
	done chan struct{} // closed when the goroutine has ended

	mu        sync.Mutex
	queue     []record // waiting for the goroutine
	held      int      // bytes of records waiting or being written
	heldLines int      // and how many records
	gap       Dropped  // dropped since the last record queued
	closing   bool

	// The totals, for Dropped: every record not written, whatever the
	// reason.
	droppedLines, droppedBytes atomic.Uint64
	// writing is when the write in progress began (unix nanoseconds), 0
	// between writes: for Stalled.
	writing atomic.Int64
}

// record is one Write's bytes, and the records dropped just before it.
type record struct {
	p   []byte
	gap Dropped
}

// New returns a Writer that writes to dst from a goroutine of its own,
// until Close.
func New(dst io.Writer, opts Options) *Writer {
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.Notice == nil {
		opts.Notice = TextNotice
	}
	w := &Writer{dst: dst, size: opts.Size, notice: opts.Notice,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// TextNotice is the notice of a Writer without Options.Notice: one line
// of plain text.
func TextNotice(d Dropped) []byte {
	return fmt.Appendf(nil, "%s: %d lines, %d bytes\n", NoticeMessage, d.Lines, d.Bytes)
}

// SlogNotice returns an Options.Notice that formats the notice as a slog
// record at level WARN, message NoticeMessage, attributes lines and
// bytes, through a handler that newHandler makes to write to the buffer
// it is given: give it the handler of the other lines (same kind, same
// options), and the notice is a line like theirs.
func SlogNotice(newHandler func(io.Writer) slog.Handler) func(Dropped) []byte {
	return func(d Dropped) []byte {
		var b bytes.Buffer
		r := slog.NewRecord(time.Now(), slog.LevelWarn, NoticeMessage, 0)
		r.AddAttrs(slog.Uint64("lines", d.Lines), slog.Uint64("bytes", d.Bytes))
		if err := newHandler(&b).Handle(context.Background(), r); err != nil || b.Len() == 0 {
			return TextNotice(d)
		}
		return b.Bytes()
	}
}

// Write queues a copy of p, one record, and returns at once. When the
// buffer has no room for p, p is dropped and counted, and Write still
// returns len(p) and no error: the caller must neither block nor retry,
// and the log will say what was lost. After Close, it returns ErrClosed
// (and counts p as dropped).
func (w *Writer) Write(p []byte) (int, error) {
	n := uint64(len(p))
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.count(1, n)
		return 0, ErrClosed
	}
	if w.held+len(p) > w.size {
		w.gap.add(1, n)
		w.mu.Unlock()
		w.count(1, n)
		return len(p), nil
	}
	w.queue = append(w.queue, record{p: bytes.Clone(p), gap: w.gap})
	w.gap = Dropped{}
	w.held += len(p)
	w.heldLines++
	w.mu.Unlock()
	w.signal()
	return len(p), nil
}

// Dropped returns the records dropped so far and their bytes: those that
// found the buffer full, those the destination failed to take, and those
// written after Close.
func (w *Writer) Dropped() Dropped {
	return Dropped{Lines: w.droppedLines.Load(), Bytes: w.droppedBytes.Load()}
}

// Close stops taking records, then waits until every record held has been
// written and any gap at the end announced, or until ctx is done; it
// returns an error saying how much was left then. Only the first call
// stops; any call waits.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.signal()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
	}
	w.mu.Lock()
	lines, n := w.heldLines, w.held
	w.mu.Unlock()
	return fmt.Errorf("log writer: %d lines (%d bytes) not written: %w", lines, n, ctx.Err())
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Writer) count(lines, bytes uint64) {
	w.droppedLines.Add(lines)
	w.droppedBytes.Add(bytes)
}

// run is the Writer's goroutine: it takes what is queued, writes it, and
// sleeps when there is nothing.
func (w *Writer) run() {
	defer close(w.done)
	var (
		batch []record
		pend  Dropped // dropped and not announced yet
	)
	for {
		w.mu.Lock()
		batch, w.queue = w.queue, batch[:0]
		closing := w.closing
		if len(batch) == 0 {
			// No record after these drops: they are the gap at the end.
			pend.add(w.gap.Lines, w.gap.Bytes)
			w.gap = Dropped{}
		}
		w.mu.Unlock()
		if len(batch) == 0 {
			if pend.Lines > 0 {
				w.announce(&pend)
			}
			if closing {
				return
			}
			<-w.wake
			continue
		}
		for i := range batch {
			r := &batch[i]
			pend.add(r.gap.Lines, r.gap.Bytes)
			w.write(&pend, r.p)
			w.mu.Lock()
			w.held -= len(r.p)
			w.heldLines--
			w.mu.Unlock()
			*r = record{} // the batch's array is reused: let p go
		}
	}
}

// write writes p, after the notice of the gap before it if any; p is
// dropped when either fails.
func (w *Writer) write(pend *Dropped, p []byte) {
	if pend.Lines > 0 && !w.announce(pend) {
		pend.add(1, uint64(len(p)))
		w.count(1, uint64(len(p)))
		return
	}
	if _, err := w.timed(p); err != nil {
		pend.add(1, uint64(len(p)))
		w.count(1, uint64(len(p)))
	}
}

// announce writes the notice of pend, and clears it if that worked.
func (w *Writer) announce(pend *Dropped) bool {
	if _, err := w.timed(w.notice(*pend)); err != nil {
		return false
	}
	*pend = Dropped{}
	return true
}

// timed writes p to the destination, marking when the write began.
func (w *Writer) timed(p []byte) (int, error) {
	w.writing.Store(time.Now().UnixNano())
	defer w.writing.Store(0)
	return w.dst.Write(p)
}

// Stalled returns how long the write in progress has been waiting for the
// destination (a pipe nobody reads), or 0 when none is in progress.
func (w *Writer) Stalled() time.Duration {
	start := w.writing.Load()
	if start == 0 {
		return 0
	}
	return time.Since(time.Unix(0, start))
}
