package supervisor

import (
	"io"
	"os"

	"github.com/prefork/prefork/pkg/lineprefix"
)

// outputs are the master's stdout and stderr as the children's copied
// lines reach them (--child-output prefix): each line whole, so that
// children's lines never interleave within one.
type outputs struct {
	stdout, stderr io.Writer
}

func newOutputs() *outputs {
	return &outputs{stdout: lineprefix.Shared(os.Stdout), stderr: lineprefix.Shared(os.Stderr)}
}

// childLines are one child's stdout and stderr pipes. The copies run on
// goroutines of their own, never the loop: a child that floods them, or a
// master stdout that stalls, delays nothing but that child's own writes.
type childLines struct {
	out, err       *lineprefix.Copier
	stdout, stderr *os.File // the write ends, the child's fd 1 and 2
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
	return &childLines{out: out, err: errc, stdout: w1, stderr: w2}, nil
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
	prefix := lineprefix.Prefix(slot, pid)
	l.out.Start(prefix)
	l.err.Start(prefix)
}
