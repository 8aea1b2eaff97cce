package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// whoamiSlot sends GET /whoami on a new connection and returns the slot
// that answered. It lets the server close first, so that the TIME_WAIT
// state stays on the server's side and thousands of these do not use up
// the client's ephemeral ports.
func whoamiSlot(addr string) (int, error) {
	slot, _, err := whoami(addr)
	return slot, err
}

// whoami is whoamiSlot, with the pid that answered too.
func whoami(addr string) (slot, pid int, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, 0, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, 0, err
	}
	var w struct {
		Slot int `json:"slot"`
		PID  int `json:"pid"`
	}
	err = json.NewDecoder(resp.Body).Decode(&w)
	resp.Body.Close()
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /whoami: status %d", resp.StatusCode)
	}
	io.Copy(io.Discard, br) // until the server's FIN
	return w.Slot, w.PID, nil
}

// loadResult is what one keep-alive load run saw.
type loadResult struct {
	ok, failed int64
	elapsed    time.Duration
	firstErr   error
}

// keepAliveLoad sends GET / from clients goroutines, each on its own
// keep-alive connection to addr, for d or until maxRequests were sent in
// all, and returns the counts. It is a raw client (write the request,
// http.ReadResponse), as in e2e: net/http's Transport would add its own
// pooling and retries to what is measured.
func keepAliveLoad(addr string, clients int, d time.Duration, maxRequests int64) loadResult {
	var (
		ok, failed, sent atomic.Int64
		errOnce          sync.Once
		firstErr         error
		dialed, wg       sync.WaitGroup
	)
	begin := make(chan struct{})
	var end time.Time // written before begin is closed
	dialed.Add(clients)
	for range clients {
		wg.Go(func() {
			fail := func(err error) {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
			dial := func() (net.Conn, *bufio.Reader) {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail(err)
					return nil, nil
				}
				c.SetDeadline(time.Now().Add(d + 10*time.Second))
				return c, bufio.NewReader(c)
			}
			c, br := dial()
			dialed.Done()
			<-begin
			for time.Now().Before(end) && sent.Add(1) <= maxRequests {
				if c == nil {
					if c, br = dial(); c == nil {
						time.Sleep(time.Millisecond) // no tight loop on a refusing port
						continue
					}
				}
				closeAfter, err := testkit.RoundTrip(c, br, false)
				if err != nil {
					fail(err)
				} else {
					ok.Add(1)
				}
				if err != nil || closeAfter {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
		})
	}
	dialed.Wait()
	start := time.Now()
	end = start.Add(d)
	close(begin)
	wg.Wait()
	return loadResult{ok: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), firstErr: firstErr}
}

// listeners returns how many sockets listen on addr's port, from
// /proc/net/tcp: with SO_REUSEPORT each child's listener is a line of its
// own.
func listeners(tb testing.TB, addr string) int {
	tb.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	want := fmt.Sprintf(":%04X", p)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], want) {
			n++
		}
	}
	return n
}
