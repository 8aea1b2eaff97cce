package supervisor

import (
	"sync"
	"testing"

	"github.com/prefork/prefork/pkg/counters"
	"golang.org/x/sys/unix"
)

// pagedChild returns a child of a generation serving listen, with a
// counter page, and the child's own mapping of it.
func pagedChild(t *testing.T, listen Listeners) (*child, *counters.Counter) {
	t.Helper()
	page, err := counters.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	fd, err := unix.Dup(page.FD())
	if err != nil {
		t.Fatal(err)
	}
	counter, err := counters.OpenCounter(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counter.Close() })
	cfg := DefaultConfig()
	cfg.Listen = listen
	return &child{gen: &generation{cfg: cfg}, page: page}, counter
}

// A child that counts every accept on its listener while the master
// reads its page: no accept of the second listener is ever taken for one
// of the first (the total is ahead of the listeners' counters for a
// moment), so the listeners add up to the accepts, exactly.
func TestCountsWhileCounting(t *testing.T) {
	t.Parallel()
	c, counter := pagedChild(t, Listeners{{Name: "http", Network: NetTCP, Addr: "127.0.0.1:1"},
		{Name: "admin", Network: NetTCP, Addr: "127.0.0.1:2"}})
	const n = 200000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			counter.Accept(1)
		}
	}()
	for c.page.Listener(1) < n {
		c.counts()
	}
	wg.Wait()
	got := c.counts()
	if got[0] != 0 || got[1] != n {
		t.Errorf("counts %v after %d accepts on admin, want [0 %d]", got, n, n)
	}
}
