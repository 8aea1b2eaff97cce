package lineprefix

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newCopier makes a Copier to dst and closes both ends when the test ends.
func newCopier(t *testing.T, dst io.Writer) (*Copier, *os.File) {
	t.Helper()
	c, w, err := New(dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close()
		c.Close()
	})
	return c, w
}

// wait waits for the copy to end, failing the test after 5 s.
func wait(t *testing.T, c *Copier) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("copy did not end")
	}
}

// copyAll copies in to a buffer through a Copier with the prefix "[p]".
func copyAll(t *testing.T, in []byte) string {
	t.Helper()
	var out bytes.Buffer
	c, w := newCopier(t, &out)
	c.Start("[p]")
	if _, err := w.Write(in); err != nil {
		t.Fatal(err)
	}
	w.Close()
	wait(t, c)
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestCopy(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "lines", in: "GET / 200\nGET /x 404\n", want: "[p] GET / 200\n[p] GET /x 404\n"},
		{name: "unterminated last line", in: "a\nb", want: "[p] a\n[p] b\n"},
		{name: "empty lines", in: "\n\n", want: "[p] \n[p] \n"},
		{name: "binary and NUL", in: "\x00\x01\xff\xfe\r\x1b[31mred\n", want: "[p] \x00\x01\xff\xfe\r\x1b[31mred\n"},
		{name: "nothing", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := copyAll(t, []byte(tt.in)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLongLine(t *testing.T) {
	long := strings.Repeat("x", 2*MaxLine+10)
	got := copyAll(t, []byte(long+"\nshort\n"+strings.Repeat("y", MaxLine)+"\n"))
	want := "[p] " + long[:MaxLine] + "\n" +
		"[p]+ " + long[MaxLine:2*MaxLine] + "\n" +
		"[p]+ " + long[2*MaxLine:] + "\n" +
		"[p] short\n" +
		"[p] " + strings.Repeat("y", MaxLine) + "\n"
	if got != want {
		t.Errorf("got %d bytes, want %d; lines %d, want %d", len(got), len(want),
			strings.Count(got, "\n"), strings.Count(want, "\n"))
	}
}

func TestPrefix(t *testing.T) {
	if got := Prefix(2, 1234); got != "[slot 2 pid 1234]" {
		t.Errorf("Prefix = %q", got)
	}
}

// TestWaitsForStart writes before Start: the lines wait in the pipe and
// get the prefix given later.
func TestWaitsForStart(t *testing.T) {
	var out bytes.Buffer
	c, w := newCopier(t, &out)
	if _, err := w.Write([]byte("early\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	select {
	case <-c.Done():
		t.Fatal("copy ended before Start")
	case <-time.After(20 * time.Millisecond):
	}
	c.Start("[slot 1 pid 9]")
	c.Start("[ignored]")
	wait(t, c)
	if got, want := out.String(), "[slot 1 pid 9] early\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// recorder keeps each Write as one entry. It has no lock of its own: the
// race detector shows that Shared is the one that serializes.
type recorder struct {
	writes [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

// TestConcurrentCopiers has 8 writers of lines of many lengths, each with
// a Copier to one Shared writer, and checks that each Write to it is one
// whole line of one writer, and each writer's lines arrive in order.
func TestConcurrentCopiers(t *testing.T) {
	const writers, lines = 8, 200
	rec := &recorder{}
	dst := Shared(rec)
	var copiers []*Copier
	var wg sync.WaitGroup
	for i := range writers {
		c, w := newCopier(t, dst)
		c.Start(Prefix(i, 1000+i))
		copiers = append(copiers, c)
		wg.Go(func() {
			defer w.Close()
			for n := range lines {
				// Lengths from 0 to twice PIPE_BUF and more.
				line := fmt.Sprintf("w%d line %d %s\n", i, n, strings.Repeat(strconv.Itoa(i), (n*97)%10000))
				if _, err := w.Write([]byte(line)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, c := range copiers {
		wait(t, c)
	}
	head := regexp.MustCompile(`^\[slot (\d) pid 100(\d)\] w(\d) line (\d+) `)
	next := make([]int, writers)
	for _, p := range rec.writes {
		m := head.FindSubmatchIndex(p)
		if m == nil || !bytes.HasSuffix(p, []byte("\n")) {
			t.Fatalf("not one whole line: %.100q", p)
		}
		digit := p[m[2]:m[3]]
		i, _ := strconv.Atoi(string(digit))
		n, _ := strconv.Atoi(string(p[m[8]:m[9]]))
		tail := p[m[1] : len(p)-1]
		if !bytes.Equal(p[m[4]:m[5]], digit) || !bytes.Equal(p[m[6]:m[7]], digit) ||
			len(bytes.Trim(tail, string(digit))) != 0 {
			t.Fatalf("line mixes writers: %.100q", p)
		}
		if n != next[i] {
			t.Fatalf("writer %d: line %d, want %d", i, n, next[i])
		}
		next[i]++
	}
	for i, n := range next {
		if n != lines {
			t.Errorf("writer %d: %d lines, want %d", i, n, lines)
		}
	}
}

// blocker is a dst whose Write blocks until release is closed.
type blocker struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (b *blocker) Write(p []byte) (int, error) {
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// TestBlockedDst stalls one dst: its Copier and its writer stop, while a
// second Copier with a dst of its own copies all its lines; then the first
// resumes and loses nothing.
func TestBlockedDst(t *testing.T) {
	stalled := &blocker{release: make(chan struct{})}
	c1, w1 := newCopier(t, stalled)
	c1.Start("[a]")
	const many = 10000 // ~150 KB: more than a pipe holds
	wrote := make(chan error, 1)
	go func() {
		var err error
		for n := 0; n < many && err == nil; n++ {
			_, err = fmt.Fprintf(w1, "a line %d\n", n)
		}
		w1.Close()
		wrote <- err
	}()

	var out bytes.Buffer
	c2, w2 := newCopier(t, &out)
	c2.Start("[b]")
	for n := range many {
		if _, err := fmt.Fprintf(w2, "b line %d\n", n); err != nil {
			t.Fatal(err)
		}
	}
	w2.Close()
	wait(t, c2)
	if got := strings.Count(out.String(), "\n"); got != many {
		t.Errorf("second copier: %d lines, want %d", got, many)
	}
	select {
	case <-wrote:
		t.Fatal("the stalled copier's writer finished while its dst was blocked")
	case <-c1.Done():
		t.Fatal("the stalled copier ended while its dst was blocked")
	default:
	}

	close(stalled.release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	wait(t, c1)
	stalled.mu.Lock()
	defer stalled.mu.Unlock()
	if got := strings.Count(stalled.buf.String(), "\n"); got != many {
		t.Errorf("stalled copier: %d lines after release, want %d", got, many)
	}
}

// failer is a dst that always fails.
type failer struct{}

var errFull = errors.New("disk full")

func (failer) Write(p []byte) (int, error) { return 0, errFull }

// TestDstFails checks that a Copier whose dst fails keeps draining the
// pipe, so that its writer never blocks, and reports the error.
func TestDstFails(t *testing.T) {
	c, w := newCopier(t, failer{})
	c.Start("[p]")
	if err := c.Err(); err != nil {
		t.Errorf("Err while running = %v", err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcde\n"), 4096)
	for range 16 { // 1 MiB, 16 times what the pipe holds
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	wait(t, c)
	if err := c.Err(); !errors.Is(err, errFull) {
		t.Errorf("Err = %v, want %v", err, errFull)
	}
}

// TestClose ends copies that Start never started, or whose writer keeps
// the pipe open.
func TestClose(t *testing.T) {
	t.Run("before Start", func(t *testing.T) {
		var out bytes.Buffer
		c, w := newCopier(t, &out)
		w.Write([]byte("lost\n"))
		c.Close()
		wait(t, c)
		c.Start("[late]")
		if out.Len() != 0 {
			t.Errorf("wrote %q", out.String())
		}
	})
	t.Run("writer still open", func(t *testing.T) {
		lines := make(chan string, 1)
		c, w := newCopier(t, chanWriter(lines))
		c.Start("[p]")
		if _, err := w.Write([]byte("kept\n")); err != nil {
			t.Fatal(err)
		}
		if got := <-lines; got != "[p] kept\n" {
			t.Errorf("got %q", got)
		}
		c.Close()
		wait(t, c)
		if err := c.Err(); err != nil {
			t.Errorf("Err = %v, want nil after Close", err)
		}
		if _, err := w.Write([]byte("x\n")); err == nil {
			t.Error("write after Close succeeded, want EPIPE")
		}
	})
}

// chanWriter sends each Write on itself.
type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	c <- string(p)
	return len(p), nil
}
