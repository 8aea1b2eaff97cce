package counters

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// newPage makes a Page closed at cleanup.
func newPage(t testing.TB) *Page {
	t.Helper()
	p, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// openCounter maps a duplicate of p's fd, as a child would its inherited
// copy, so p keeps its own descriptor.
func openCounter(t testing.TB, p *Page) *Counter {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(p.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenCounter(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("OpenCounter left fd %d open (fcntl: %v)", fd, err)
	}
	return c
}

func TestCounterConcurrentInc(t *testing.T) {
	const goroutines, perGoroutine = 64, 10_000
	p := newPage(t)
	c := openCounter(t, p)
	if got := p.Accepts(); got != 0 {
		t.Fatalf("new page: Accepts() = %d, want 0", got)
	}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if got, want := p.Accepts(), uint64(goroutines*perGoroutine); got != want {
		t.Errorf("Accepts() = %d, want %d", got, want)
	}
	if got := c.Load(); got != p.Accepts() {
		t.Errorf("Load() = %d, Accepts() = %d", got, p.Accepts())
	}
}

func TestPageFD(t *testing.T) {
	p := newPage(t)
	flags, err := unix.FcntlInt(uintptr(p.FD()), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("page fd is not close-on-exec")
	}
	var st unix.Stat_t
	if err := unix.Fstat(p.FD(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(unix.Getpagesize()) {
		t.Errorf("page size %d, want %d", st.Size, unix.Getpagesize())
	}
}

func TestPageSeals(t *testing.T) {
	p := newPage(t)
	got, err := unix.FcntlInt(uintptr(p.FD()), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	const want = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if got != want {
		t.Errorf("seals = %#x, want %#x", got, want)
	}
	if err := unix.Ftruncate(p.FD(), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("shrinking a sealed page: err = %v, want EPERM", err)
	}
}

func TestPageCloseTwice(t *testing.T) {
	p, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if p.FD() != -1 || p.Accepts() != 0 {
		t.Errorf("closed page: FD() = %d, Accepts() = %d", p.FD(), p.Accepts())
	}
}

func TestOpenCounterErrors(t *testing.T) {
	small, err := unix.MemfdCreate("small", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(small)
	if err := unix.Ftruncate(small, MinSize-1); err != nil {
		t.Fatal(err)
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	tests := []struct {
		name    string
		fd      int
		wantErr error
	}{
		{name: "too small", fd: small, wantErr: ErrTooSmall},
		{name: "pipe", fd: pipe[0], wantErr: ErrTooSmall},
		{name: "bad fd", fd: 1 << 20, wantErr: unix.EBADF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := OpenCounter(tt.fd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenCounter: %v, %v; want error %v", c, err, tt.wantErr)
			}
		})
	}
	// A failed OpenCounter leaves the fd alone.
	if _, err := unix.FcntlInt(uintptr(small), unix.F_GETFD, 0); err != nil {
		t.Errorf("fd closed after failed OpenCounter: %v", err)
	}
}

func TestCounterCloseTwice(t *testing.T) {
	c := openCounter(t, newPage(t))
	if err := c.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := openCounter(b, newPage(b))
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

func BenchmarkCounterIncParallel(b *testing.B) {
	c := openCounter(b, newPage(b))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
		}
	})
}

// Accept and Datagram add to their total and to the listener's counter;
// an index out of range adds to the total only.
func TestCounterPerListener(t *testing.T) {
	p := newPage(t)
	c := openCounter(t, p)
	c.Accept(0)
	c.Accept(0)
	c.Accept(MaxListeners - 1)
	c.Datagram(1)
	c.Datagram(1)
	c.Datagram(1)
	c.Inc()                  // the total only, as before listeners had counters
	c.Accept(-1)             // out of range: the total only
	c.Datagram(MaxListeners) // out of range: the total only
	if got, want := p.Accepts(), uint64(5); got != want {
		t.Errorf("Accepts() = %d, want %d", got, want)
	}
	if got, want := p.Datagrams(), uint64(4); got != want {
		t.Errorf("Datagrams() = %d, want %d", got, want)
	}
	if got := c.Load(); got != 5 {
		t.Errorf("Load() = %d, want 5", got)
	}
	want := map[int]uint64{0: 2, 1: 3, MaxListeners - 1: 1}
	for i := -1; i <= MaxListeners; i++ {
		if got := p.Listener(i); got != want[i] {
			t.Errorf("Listener(%d) = %d, want %d", i, got, want[i])
		}
	}
}

// The counters sit at the offsets of the package comment, little-endian:
// the layout the master and a child in any language agree on.
func TestCounterLayout(t *testing.T) {
	p := newPage(t)
	c := openCounter(t, p)
	c.Accept(2)
	c.Datagram(5)
	c.Datagram(5)
	mem, err := unix.Mmap(p.FD(), 0, MinSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	want := map[int]uint64{AcceptsOffset: 1, DatagramsOffset: 2, ListenersOffset + 8*2: 1, ListenersOffset + 8*5: 2}
	for off := 0; off < MinSize; off += 8 {
		if got := binary.LittleEndian.Uint64(mem[off:]); got != want[off] {
			t.Errorf("offset %d = %d, want %d", off, got, want[off])
		}
	}
}

func TestCounterConcurrentPerListener(t *testing.T) {
	const goroutines, perGoroutine = 16, 5_000
	p := newPage(t)
	c := openCounter(t, p)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				if g%2 == 0 {
					c.Accept(g % 4)
				} else {
					c.Datagram(g % 4)
				}
			}
		})
	}
	wg.Wait()
	half := uint64(goroutines / 2 * perGoroutine)
	if p.Accepts() != half || p.Datagrams() != half {
		t.Errorf("Accepts() = %d, Datagrams() = %d, want %d each", p.Accepts(), p.Datagrams(), half)
	}
	for i := range 4 {
		if got, want := p.Listener(i), uint64(goroutines/4*perGoroutine); got != want {
			t.Errorf("Listener(%d) = %d, want %d", i, got, want)
		}
	}
}

func TestCounterNoAlloc(t *testing.T) {
	c := openCounter(t, newPage(t))
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"Inc", c.Inc},
		{"Accept", func() { c.Accept(3) }},
		{"Datagram", func() { c.Datagram(3) }},
	} {
		if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
			t.Errorf("%s allocates %v times", tt.name, n)
		}
	}
}

// A nil or closed Page reads 0 everywhere.
func TestPageLoadsWithoutMapping(t *testing.T) {
	var nilPage *Page
	closed, err := NewPage()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	for name, p := range map[string]*Page{"nil": nilPage, "closed": closed} {
		if p.Accepts() != 0 || p.Datagrams() != 0 || p.Listener(0) != 0 {
			t.Errorf("%s page: %d %d %d, want zeros", name, p.Accepts(), p.Datagrams(), p.Listener(0))
		}
	}
}

func BenchmarkCounterDatagram(b *testing.B) {
	c := openCounter(b, newPage(b))
	b.ReportAllocs()
	for b.Loop() {
		c.Datagram(1)
	}
}
