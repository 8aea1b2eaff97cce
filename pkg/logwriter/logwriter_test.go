package logwriter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDst records each Write whole. It can fail chosen writes (by the
// start of what is written) and hold its first Write until released.
type fakeDst struct {
	mu     sync.Mutex
	writes []string
	fail   map[string]int // prefix -> how many more writes starting with it fail

	block    bool          // the first Write waits for release
	entered  chan struct{} // closed when the first Write has started
	release  chan struct{} // close to let it go
	enterOne sync.Once
}

func newFakeDst(block bool, fail map[string]int) *fakeDst {
	if fail == nil {
		fail = map[string]int{}
	}
	return &fakeDst{block: block, fail: fail, entered: make(chan struct{}), release: make(chan struct{})}
}

var errFake = errors.New("fake write failure")

func (d *fakeDst) Write(p []byte) (int, error) {
	if d.block {
		d.enterOne.Do(func() {
			close(d.entered)
			<-d.release
		})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for prefix, n := range d.fail {
		if n > 0 && bytes.HasPrefix(p, []byte(prefix)) {
			d.fail[prefix] = n - 1
			return 0, errFake
		}
	}
	d.writes = append(d.writes, string(p))
	return len(p), nil
}

func (d *fakeDst) got() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.writes...)
}

// testNotice is the tests' notice: short, and telling what it counts.
func testNotice(d Dropped) []byte { return fmt.Appendf(nil, "DROP %d %d\n", d.Lines, d.Bytes) }

// rec is a record of n bytes, its first byte c, ending in a newline.
func rec(c byte, n int) string { return string(c) + strings.Repeat(".", n-2) + "\n" }

func closeWithin(t *testing.T, w *Writer, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return w.Close(ctx)
}

func TestWriter(t *testing.T) {
	t.Parallel()
	a, b, c, d, e := rec('a', 40), rec('b', 40), rec('c', 40), rec('d', 40), rec('e', 10)
	tests := []struct {
		name  string
		size  int
		block bool // the destination's first Write blocks until every record is written
		fail  map[string]int
		in    []string
		want  []string
		// wantDropped is the totals after Close.
		wantDropped Dropped
	}{
		{name: "in order, one Write each", size: 1000, in: []string{a, b, c}, want: []string{a, b, c}},
		{name: "empty record", size: 1000, in: []string{a, "", b}, want: []string{a, "", b}},
		{
			// a is being written (held), b waits: 80 of 100 bytes; c
			// and d do not fit, e does.
			name: "full buffer drops whole records, announced before the next",
			size: 100, block: true, in: []string{a, b, c, d, e},
			want:        []string{a, b, "DROP 2 80\n", e},
			wantDropped: Dropped{2, 80},
		},
		{
			name: "drops at the end announced at Close", size: 100, block: true, in: []string{a, b, c},
			want: []string{a, b, "DROP 1 40\n"}, wantDropped: Dropped{1, 40},
		},
		{
			name: "record larger than the buffer", size: 30, in: []string{a, e},
			want: []string{"DROP 1 40\n", e}, wantDropped: Dropped{1, 40},
		},
		{
			name: "failed write announced", size: 1000, fail: map[string]int{"b": 1}, in: []string{a, b, c},
			want: []string{a, "DROP 1 40\n", c}, wantDropped: Dropped{1, 40},
		},
		{
			// The notice fails, so c must not be written after an
			// unannounced gap: it joins the gap.
			name: "failed notice drops the record after it", size: 1000,
			fail: map[string]int{"b": 1, "DROP": 1}, in: []string{a, b, c, d},
			want: []string{a, "DROP 2 80\n", d}, wantDropped: Dropped{2, 80},
		},
		{
			name: "destination failing to the end", size: 1000,
			fail: map[string]int{"b": 1, "c": 1, "DROP": 10}, in: []string{a, b, c},
			want: []string{a}, wantDropped: Dropped{2, 80},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dst := newFakeDst(tt.block, tt.fail)
			t.Cleanup(func() {
				select {
				case <-dst.release:
				default:
					close(dst.release)
				}
			})
			w := New(dst, Options{Size: tt.size, Notice: testNotice})
			for i, r := range tt.in {
				if n, err := w.Write([]byte(r)); n != len(r) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", r, n, err, len(r))
				}
				if i == 0 && tt.block {
					select {
					case <-dst.entered:
					case <-time.After(10 * time.Second):
						t.Fatal("the first record never reached the destination")
					}
				}
			}
			if tt.block {
				close(dst.release)
			}
			if err := closeWithin(t, w, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := dst.got(); !equal(got, tt.want) {
				t.Errorf("written %q, want %q", got, tt.want)
			}
			if got := w.Dropped(); got != tt.wantDropped {
				t.Errorf("Dropped() = %+v, want %+v", got, tt.wantDropped)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A destination that blocks costs Write nothing: thousands of records are
// taken, or dropped and counted, while it blocks.
func TestWriteNeverBlocks(t *testing.T) {
	t.Parallel()
	dst := newFakeDst(true, nil)
	w := New(dst, Options{Size: 4096, Notice: testNotice})
	t.Cleanup(func() {
		close(dst.release)
		closeWithin(t, w, 10*time.Second)
	})
	line := []byte(rec('x', 100))
	w.Write(line)
	<-dst.entered
	const n = 10000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			w.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a blocked destination")
	}
	// 4096 bytes hold 40 records of 100, the one being written included.
	if got, want := w.Dropped(), (Dropped{n - 39, (n - 39) * 100}); got != want {
		t.Errorf("Dropped() = %+v, want %+v", got, want)
	}
	// The write in progress has waited since before the loop above.
	if d := w.Stalled(); d <= 0 {
		t.Errorf("Stalled() = %v during a blocked write, want > 0", d)
	}
}

// Stalled is 0 between writes.
func TestNotStalled(t *testing.T) {
	t.Parallel()
	dst := newFakeDst(false, nil)
	w := New(dst, Options{Notice: testNotice})
	w.Write([]byte(rec('a', 10)))
	closeWithin(t, w, 10*time.Second)
	if d := w.Stalled(); d != 0 {
		t.Errorf("Stalled() = %v after every write returned, want 0", d)
	}
}

// Close gives up at its deadline on a destination that blocks, says what
// was not written, and takes no more records.
func TestCloseDeadline(t *testing.T) {
	t.Parallel()
	dst := newFakeDst(true, nil)
	t.Cleanup(func() { close(dst.release) })
	w := New(dst, Options{Notice: testNotice})
	w.Write([]byte(rec('a', 10)))
	<-dst.entered
	w.Write([]byte(rec('b', 20)))
	start := time.Now()
	err := closeWithin(t, w, 50*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 lines (30 bytes) not written") {
		t.Errorf("Close = %v; want 2 lines (30 bytes) not written, deadline exceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %v with a 50ms deadline", took)
	}
	if n, err := w.Write([]byte("late\n")); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	if got := w.Dropped(); got != (Dropped{1, 5}) {
		t.Errorf("Dropped() = %+v, want the late line", got)
	}
}

// Concurrent writers: every record is written whole or counted, and each
// writer's records keep their order.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	slow := writerFunc(func(p []byte) (int, error) {
		time.Sleep(time.Microsecond)
		return out.Write(p)
	})
	w := New(slow, Options{Size: 2000, Notice: testNotice})
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				fmt.Fprintf(w, "%d %d %s\n", g, i, strings.Repeat("y", i%50))
			}
		})
	}
	wg.Wait()
	if err := closeWithin(t, w, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	last := make([]int, writers)
	for i := range last {
		last[i] = -1
	}
	written, announced := 0, uint64(0)
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var g, i, lines, n int
		if _, err := fmt.Sscanf(line, "DROP %d %d", &lines, &n); err == nil {
			announced += uint64(lines)
			continue
		}
		f := strings.Fields(line)
		if _, err := fmt.Sscanf(line, "%d %d", &g, &i); err != nil || len(f) < 2 || len(f) > 3 || g < 0 || g >= writers {
			t.Fatalf("line %q is no record: %v", line, err)
		}
		pad := strings.Join(f[2:], "")
		if len(pad) != i%50 || i <= last[g] {
			t.Fatalf("line %q cut or out of order (writer %d's last was %d)", line, g, last[g])
		}
		last[g] = i
		written++
	}
	d := w.Dropped()
	if uint64(written)+d.Lines != writers*each || announced != d.Lines {
		t.Errorf("written %d + dropped %d != %d, or announced %d != dropped", written, d.Lines, writers*each, announced)
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// The JSON log stays one JSON object per line with the notice in it, in
// the handler's own shape.
func TestSlogNoticeJSON(t *testing.T) {
	t.Parallel()
	dst := newFakeDst(true, nil)
	newHandler := func(out io.Writer) slog.Handler { return slog.NewJSONHandler(out, nil) }
	w := New(dst, Options{Size: 300, Notice: SlogNotice(newHandler)})
	log := slog.New(newHandler(w))
	log.Info("first")
	<-dst.entered
	for i := range 20 {
		log.Info("more", "i", i)
	}
	close(dst.release)
	if err := closeWithin(t, w, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var notices []map[string]any
	for _, line := range dst.got() {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || !strings.HasSuffix(line, "\n") {
			t.Fatalf("line %q is not one JSON object: %v", line, err)
		}
		if m["msg"] == NoticeMessage {
			notices = append(notices, m)
		}
	}
	d := w.Dropped()
	if d.Lines == 0 || len(notices) != 1 {
		t.Fatalf("dropped %+v, notices %v; want some dropped and one notice", d, notices)
	}
	n := notices[0]
	if n["level"] != "WARN" || n["lines"] != float64(d.Lines) || n["bytes"] != float64(d.Bytes) || n["time"] == nil {
		t.Errorf("notice %v; want level WARN, lines %d, bytes %d, a time", n, d.Lines, d.Bytes)
	}
}

func TestTextNotice(t *testing.T) {
	t.Parallel()
	got := string(TextNotice(Dropped{3, 120}))
	if want := NoticeMessage + ": 3 lines, 120 bytes\n"; got != want {
		t.Errorf("TextNotice = %q, want %q", got, want)
	}
	text := SlogNotice(func(out io.Writer) slog.Handler { return slog.NewTextHandler(out, nil) })(Dropped{3, 120})
	if !bytes.Contains(text, []byte("level=WARN")) || !bytes.HasSuffix(text, []byte(" lines=3 bytes=120\n")) {
		t.Errorf("SlogNotice with a text handler = %q", text)
	}
}

// FuzzWriter checks the invariants against any sequence of record sizes
// and destination failures: what is written is the records in order, each
// whole; before each written record, notices count exactly the records
// skipped since the one before; Dropped counts every record not written.
func FuzzWriter(f *testing.F) {
	f.Add([]byte{10, 200, 3, 0x80 | 5, 7, 0x80, 0x80, 1}, uint16(64))
	f.Add([]byte{0x80, 0x80, 0x80, 1, 2, 3}, uint16(1))
	f.Fuzz(func(t *testing.T, script []byte, size uint16) {
		var (
			mu     sync.Mutex
			writes []string
			calls  int
		)
		// A byte with its top bit set makes the destination fail a
		// write (in write order); its low bits are the record's length.
		var fails []bool
		for _, b := range script {
			fails = append(fails, b&0x80 != 0)
		}
		dst := writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			i := calls
			calls++
			if i < len(fails) && fails[i] {
				return 0, errFake
			}
			writes = append(writes, string(p))
			return len(p), nil
		})
		w := New(dst, Options{Size: int(size), Notice: testNotice})
		for i, b := range script {
			n := int(b&0x7f) + 8
			w.Write([]byte(fmt.Sprintf("%06d", i) + strings.Repeat(".", n-7) + "\n"))
		}
		if err := closeWithin(t, w, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		next, skipped := 0, uint64(0) // the next record, records skipped and announced
		announced := uint64(0)
		for _, s := range writes {
			var lines, n int
			if _, err := fmt.Sscanf(s, "DROP %d %d", &lines, &n); err == nil {
				announced += uint64(lines)
				skipped += uint64(lines)
				continue
			}
			var i int
			if _, err := fmt.Sscanf(s, "%06d", &i); err != nil || i < next || len(s) != int(script[i]&0x7f)+8 {
				t.Fatalf("write %q is no whole record after record %d", s, next-1)
			}
			if uint64(i-next) != skipped {
				t.Fatalf("record %d follows %d with %d announced dropped", i, next-1, skipped)
			}
			next, skipped = i+1, 0
		}
		d := w.Dropped()
		if d.Lines < announced {
			t.Fatalf("dropped %d, announced %d", d.Lines, announced)
		}
		written := uint64(len(writes)) - countNotices(writes)
		if written+d.Lines != uint64(len(script)) {
			t.Fatalf("written %d + dropped %d != %d records", written, d.Lines, len(script))
		}
	})
}

func countNotices(writes []string) uint64 {
	var n uint64
	for _, s := range writes {
		if strings.HasPrefix(s, "DROP ") {
			n++
		}
	}
	return n
}

// BenchmarkWrite is the cost of a log line to the caller, whatever the
// destination does: one that takes everything at once (io.Discard; the
// goroutine still drops what comes faster than it writes), and one that
// blocks (every record past the first 1 MiB dropped and counted).
func BenchmarkWrite(b *testing.B) {
	for _, blocked := range []bool{false, true} {
		b.Run(fmt.Sprintf("blocked=%v", blocked), func(b *testing.B) {
			var dst io.Writer = io.Discard
			release := func() {}
			if blocked {
				d := newFakeDst(true, nil)
				release = func() { close(d.release) }
				dst = d
			}
			w := New(dst, Options{})
			line := []byte(rec('x', 200))
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				w.Write(line)
			}
			b.StopTimer()
			b.ReportMetric(float64(w.Dropped().Lines)/float64(b.N), "dropped/op")
			release()
			w.Close(context.Background())
		})
	}
}

// BenchmarkSlog compares a JSON slog line written straight to a
// destination with one through a Writer.
func BenchmarkSlog(b *testing.B) {
	for _, through := range []bool{false, true} {
		b.Run(fmt.Sprintf("writer=%v", through), func(b *testing.B) {
			var dst io.Writer = io.Discard
			var w *Writer
			if through {
				w = New(io.Discard, Options{})
				dst = w
			}
			log := slog.New(slog.NewJSONHandler(dst, nil))
			b.ReportAllocs()
			for b.Loop() {
				log.Info("child started", "slot", 3, "generation", 2, "pid", 12345)
			}
			if w != nil {
				w.Close(context.Background())
			}
		})
	}
}
