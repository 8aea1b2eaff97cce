package counters

import (
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
