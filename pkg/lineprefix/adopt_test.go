package lineprefix

import (
	"bytes"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the Copier's goroutine and the
// test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A pipe handed on across an exec goes on being copied: what is in it
// comes out prefixed, and the copy ends when its writer closes.
func TestAdoptCopiesWhatIsInThePipe(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	// Written before the new master takes the pipe: it waits there.
	if _, err := w.WriteString("before\n"); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	c, err := Adopt(&out, fd, Prefix(1, 42))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReadFD() < 0 {
		t.Errorf("ReadFD of a running copy: %d", c.ReadFD())
	}
	w.WriteString("after\n")
	w.Close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the copy did not end when its writer closed")
	}
	want := Prefix(1, 42) + " before\n" + Prefix(1, 42) + " after\n"
	if got := out.String(); got != want {
		t.Errorf("copied %q, want %q", got, want)
	}
}
