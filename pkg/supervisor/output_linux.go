package supervisor

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/prefork/prefork/pkg/lineprefix"
	"golang.org/x/sys/unix"
)

// outputs are the master's stdout and stderr as the children's copied
// lines reach them (--child-output prefix): each line whole, so that
// children's lines never interleave within one.
type outputs struct {
	stdout, stderr io.Writer

	mu     sync.Mutex
	active map[*childLines]bool // until both copies have ended
	copies sync.WaitGroup
}

func newOutputs() *outputs {
	return &outputs{stdout: lineprefix.Shared(os.Stdout), stderr: lineprefix.Shared(os.Stderr),
		active: make(map[*childLines]bool)}
}

// outputFlushTimeout bounds how long a stopping master waits for the last
// lines of its children: a daemon that escaped with a pipe, or a stdout
// nobody reads, must not hold up the exit.
const outputFlushTimeout = 2 * time.Second

// finish waits until every copy has written its child's last line, at
// most timeout, then ends those still running.
func (o *outputs) finish(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		o.copies.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for l := range o.active {
		l.out.Close()
		l.err.Close()
	}
}

// childLines are one child's stdout and stderr pipes. The copies run on
// goroutines of their own, never the loop: a child that floods them, or a
// master stdout that stalls, delays nothing but that child's own writes.
type childLines struct {
	out, err       *lineprefix.Copier
	stdout, stderr *os.File // the write ends, the child's fd 1 and 2
	slot, pid      int      // set by started
}

// open makes a child's pipes; call started once it is forked.
func (o *outputs) open() (*childLines, error) {
	out, w1, err := lineprefix.New(o.stdout)
	if err != nil {
		return nil, err
	}
	errc, w2, err := lineprefix.New(o.stderr)
	if err != nil {
		out.Close()
		w1.Close()
		return nil, err
	}
	l := &childLines{out: out, err: errc, stdout: w1, stderr: w2}
	o.track(l)
	return l, nil
}

// track keeps l active until both its copies have ended.
func (o *outputs) track(l *childLines) {
	o.mu.Lock()
	o.active[l] = true
	o.mu.Unlock()
	o.copies.Add(1)
	go func() {
		defer o.copies.Done()
		<-l.out.Done()
		<-l.err.Done()
		o.mu.Lock()
		delete(o.active, l)
		o.mu.Unlock()
	}()
}

// outputFile is one child's output pipes, as an upgrade in place hands
// them on: their read ends.
type outputFile struct {
	PID, Slot int
	Out, Err  int
}

// handOn returns the read ends of the pipes of every started child whose
// copies run.
func (o *outputs) handOn() []outputFile {
	o.mu.Lock()
	defer o.mu.Unlock()
	var files []outputFile
	for l := range o.active {
		if l.pid == 0 {
			continue
		}
		// Each on its own: a child that closed its stderr still writes
		// to its stdout.
		if out, errfd := l.out.ReadFD(), l.err.ReadFD(); out >= 0 || errfd >= 0 {
			files = append(files, outputFile{PID: l.pid, Slot: l.slot, Out: out, Err: errfd})
		}
	}
	return files
}

// adopt goes on copying the pipes an old master handed on; a pipe it
// cannot take is said and closed, the others are copied.
func (o *outputs) adopt(files []outputFile) error {
	var errs []error
	for _, f := range files {
		prefix := lineprefix.Prefix(f.Slot, f.PID)
		out, err := adoptLines(o.stdout, f.Out, prefix)
		errs = append(errs, err)
		errc, err := adoptLines(o.stderr, f.Err, prefix)
		errs = append(errs, err)
		o.track(&childLines{out: out, err: errc, slot: f.Slot, pid: f.PID})
	}
	return errors.Join(errs...)
}

// adoptLines copies the pipe fd, or returns a copy already ended where
// there is none (-1) or it cannot be taken (closed then).
func adoptLines(dst io.Writer, fd int, prefix string) (*lineprefix.Copier, error) {
	if fd < 0 {
		return lineprefix.Ended(), nil
	}
	c, err := lineprefix.Adopt(dst, fd, prefix)
	if err != nil {
		unix.Close(fd)
		return lineprefix.Ended(), err
	}
	return c, nil
}

// started closes the master's copies of the write ends and starts the
// copies with prefix; with no child started (pid 0), it ends them.
func (l *childLines) started(slot, pid int) {
	l.stdout.Close()
	l.stderr.Close()
	if pid == 0 {
		l.out.Close()
		l.err.Close()
		return
	}
	l.slot, l.pid = slot, pid
	prefix := lineprefix.Prefix(slot, pid)
	l.out.Start(prefix)
	l.err.Start(prefix)
}
