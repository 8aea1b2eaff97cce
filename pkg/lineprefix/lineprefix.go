package lineprefix

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

const (
	// MaxLine is the most bytes of a line written after one prefix; a
	// longer line is cut into pieces of MaxLine bytes and a last shorter
	// one.
	MaxLine = 64 << 10
	// Separator comes between the prefix and a line, or its first piece.
	Separator = " "
	// ContinuedSeparator comes between the prefix and each later piece of
	// a line cut at MaxLine. It differs from Separator before the space,
	// so that it cannot be mistaken for a line that starts with "+ ".
	ContinuedSeparator = "+ "
)

// readSize is the most a Copier reads from its pipe at once.
const readSize = 32 << 10

// Prefix returns the prefix of a child's lines, "[slot 2 pid 1234]".
func Prefix(slot, pid int) string {
	return fmt.Sprintf("[slot %d pid %d]", slot, pid)
}

// Copier copies the lines of one pipe to a writer, each prefixed.
type Copier struct {
	dst io.Writer
	r   *os.File

	startOnce sync.Once
	started   chan struct{}
	prefix    string // set before started is closed

	closeOnce sync.Once
	stopped   chan struct{}

	done chan struct{}
	err  error // set before done is closed

	// line is the prefixed line being written, the goroutine's own. It
	// grows to the longest line seen, at most MaxLine and the prefix.
	line []byte
}

// New makes a pipe and returns its write end, to hand to a child as its fd
// 1 or 2, and a Copier that copies from its read end to dst, each line
// prefixed, once Start gives the prefix; lines written before then wait in
// the pipe. The caller closes its copy of the write end once the child is
// started (or failed to start), so that the copy can end; if no child was
// started, it calls Close too, as the Copier would wait for Start forever.
//
// The write end is in blocking mode, as a child expects of its stdout
// (one in non-blocking mode would get EAGAIN when the pipe is full).
func New(dst io.Writer) (*Copier, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("child output pipe: %w", err)
	}
	// os.Pipe makes both ends non-blocking for the runtime's poller, and
	// the mode belongs to the open file, which the child shares. Fd puts
	// the write end back into blocking mode; the master never writes to
	// it. The read end stays with the poller, so Close can interrupt a
	// Read.
	w.Fd()
	c := &Copier{
		dst:     dst,
		r:       r,
		started: make(chan struct{}),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go c.run()
	return c, w, nil
}

// Start starts the copy, each line prefixed with prefix and a separator
// (Prefix(slot, pid) gives "[slot 2 pid 1234]"). Only the first call counts.
func (c *Copier) Start(prefix string) {
	c.startOnce.Do(func() {
		c.prefix = prefix
		close(c.started)
	})
}

// Done is closed when the copy has ended: every writer of the pipe closed
// it and the last line was written, or Close was called.
func (c *Copier) Done() <-chan struct{} {
	return c.done
}

// Err returns why the copy lost output, once Done is closed: the first
// error of dst (after which the Copier kept reading the pipe and dropped
// what it read, so that the child never blocks on it) or of reading the
// pipe. It returns nil while the copy runs, and after a clean end.
func (c *Copier) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close ends the copy without waiting for the writers: it closes the read
// end, so a writer still holding the pipe gets EPIPE (or SIGPIPE), and what
// they wrote and the Copier did not read yet is lost. It is for a child
// that is gone but left the pipe to something that will not close it, and
// for a master that exits. It does not wait for Done, which a dst blocked
// in Write delays. Close before Start ends the copy without writing.
func (c *Copier) Close() error {
	c.closeOnce.Do(func() {
		close(c.stopped)
		// Closing while run reads is safe: the poller wakes the Read.
		c.r.Close()
	})
	return nil
}

// run is the Copier's goroutine.
func (c *Copier) run() {
	defer close(c.done)
	defer c.r.Close()
	select {
	case <-c.started:
	case <-c.stopped:
		return
	}
	buf := make([]byte, readSize)
	s := splitter{max: MaxLine}
	for {
		n, err := c.r.Read(buf)
		s.write(buf[:n], c.emit)
		if err != nil {
			if !errors.Is(err, io.EOF) && !c.closed() && c.err == nil {
				c.err = fmt.Errorf("read child output: %w", err)
			}
			break
		}
	}
	s.flush(c.emit)
}

// closed reports whether Close was called.
func (c *Copier) closed() bool {
	select {
	case <-c.stopped:
		return true
	default:
		return false
	}
}

// emit writes one piece of a line, prefixed, in one Write. After dst
// failed it drops the piece: dst will not recover, and the pipe must still
// be drained.
func (c *Copier) emit(piece []byte, continued bool) {
	if c.err != nil {
		return
	}
	sep := Separator
	if continued {
		sep = ContinuedSeparator
	}
	c.line = append(c.line[:0], c.prefix...)
	c.line = append(c.line, sep...)
	c.line = append(c.line, piece...)
	c.line = append(c.line, '\n')
	if _, err := c.dst.Write(c.line); err != nil {
		c.err = fmt.Errorf("write child output: %w", err)
	}
}

// Adopt returns a Copier of the read end fd of a pipe that an earlier
// master made with New and handed on across an exec of itself (an
// upgrade in place), started with prefix. It owns fd from then on. What
// the earlier master had read of a line and not yet written is lost; what
// is still in the pipe is not.
func Adopt(dst io.Writer, fd int, prefix string) (*Copier, error) {
	// Non-blocking, as New's read end, so that Close can interrupt a Read.
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("child output pipe %d: %w", fd, err)
	}
	syscall.CloseOnExec(fd)
	c := &Copier{
		dst:     dst,
		r:       os.NewFile(uintptr(fd), "child-output"),
		started: make(chan struct{}),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go c.run()
	c.Start(prefix)
	return c, nil
}

// ReadFD returns the descriptor of the pipe's read end, which c keeps
// owning, for an upgrade in place to hand on; -1 once the copy ended.
func (c *Copier) ReadFD() int {
	raw, err := c.r.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if raw.Control(func(u uintptr) { fd = int(u) }) != nil {
		return -1
	}
	return fd
}

// Ended returns a Copier with nothing to copy, done already: the stand-in
// for a pipe an upgrade in place could not hand on.
func Ended() *Copier {
	c := &Copier{started: make(chan struct{}), stopped: make(chan struct{}), done: make(chan struct{})}
	close(c.done)
	return c
}
