package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// loadMode says how the load client uses connections.
type loadMode int

const (
	// perRequest opens a new connection for every request.
	perRequest loadMode = iota
	// keepAlive sends request after request on one connection, and opens a
	// new one only when the server closes it (Connection: close).
	keepAlive
)

func (m loadMode) String() string {
	if m == keepAlive {
		return "keep-alive"
	}
	return "new connection per request"
}

// loadResult counts what a load run saw. Every failure is counted: refused,
// reset, EOF before a full response, a timeout or a status other than 200.
type loadResult struct {
	mode     loadMode
	mu       sync.Mutex
	ok       int
	failures map[string]int
	samples  []string
}

func (r *loadResult) fail(kind string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[string]int{}
	}
	r.failures[kind]++
	if len(r.samples) < 5 {
		r.samples = append(r.samples, fmt.Sprintf("%s: %v", kind, err))
	}
}

func (r *loadResult) succeed() {
	r.mu.Lock()
	r.ok++
	r.mu.Unlock()
}

// failed returns the number of failed requests.
func (r *loadResult) failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.failures {
		n += c
	}
	return n
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d ok, failures %v %q", r.ok, r.failures, r.samples)
}

// runLoad sends requests to addr from clients goroutines until ctx is done
// or maxRequests were sent in all; it waits for them and returns the
// counts. It is the test's own client, rather than net/http's, because
// http.Transport silently retries a request whose connection broke, which
// would hide exactly the failures these tests look for.
func runLoad(ctx context.Context, addr string, mode loadMode, clients, maxRequests int) *loadResult {
	res := &loadResult{}
	var budget sync.Mutex
	left := maxRequests
	take := func() bool {
		budget.Lock()
		defer budget.Unlock()
		if left == 0 {
			return false
		}
		left--
		return true
	}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var conn net.Conn
			var br *bufio.Reader
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for ctx.Err() == nil && take() {
				if conn == nil {
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						res.fail(testkit.Classify(err), err)
						continue
					}
					conn, br = c, bufio.NewReader(c)
				}
				closeAfter, err := testkit.RoundTrip(conn, br, mode == perRequest)
				if err != nil {
					res.fail(testkit.Classify(err), err)
				} else {
					res.succeed()
				}
				if err != nil || closeAfter || mode == perRequest {
					conn.Close()
					conn = nil
				}
			}
		})
	}
	wg.Wait()
	return res
}

// runBothLoads runs runLoad with 16 clients in each mode, keep-alive and
// a new connection per request, until ctx ends, and sends both results.
func runBothLoads(ctx context.Context, addr string) <-chan *loadResult {
	results := make(chan *loadResult, 2)
	for _, mode := range []loadMode{keepAlive, perRequest} {
		go func() {
			r := runLoad(ctx, addr, mode, 16, 5_000_000)
			r.mode = mode
			results <- r
		}()
	}
	return results
}
