package child

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv waits for one value from ch or fails the test.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// served is a server under serveUntil with a drain the test triggers.
type served struct {
	addr      string
	d         *drainer
	drainCh   chan struct{}
	drainOnce sync.Once
	done      chan struct{} // closed when serve has returned err
	err       error
}

// startServe serves h on a fresh 127.0.0.1 port; cleanup drains, closes
// what is left and waits for serve to return.
func startServe(t *testing.T, h http.Handler, grace, timeout time.Duration) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: waitTimeout}
	s := &served{
		addr:    ln.Addr().String(),
		d:       newDrainer(grace),
		drainCh: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go func() {
		s.err = s.d.serve(srv, ln, s.drainCh, timeout)
		close(s.done)
	}()
	t.Cleanup(func() {
		s.startDrain()
		srv.Close()
		select {
		case <-s.done:
		case <-time.After(waitTimeout):
			t.Error("serve did not return at cleanup")
		}
	})
	return s
}

// wait returns the result of serve once it has returned.
func (s *served) wait(t *testing.T) error {
	t.Helper()
	recv(t, "serve to return", s.done)
	return s.err
}

// startDrain closes the drain channel and returns when serve has begun to
// drain, so responses from then on must carry Connection: close.
func (s *served) startDrain() time.Time {
	start := time.Now()
	s.drainOnce.Do(func() { close(s.drainCh) })
	for !s.d.draining.Load() && time.Since(start) < waitTimeout {
		time.Sleep(time.Millisecond)
	}
	return start
}

// rawClient speaks HTTP/1.1 by hand: unlike http.Client it never retries,
// so every failure the server causes is seen.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dial(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, br: bufio.NewReader(conn)}
}

// get sends one keep-alive GET and reads the whole response.
func (c *rawClient) get(path string) (*http.Response, string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		return nil, "", err
	}
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return nil, "", fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("read body: %w", err)
	}
	return resp, string(body), nil
}

// waitClosed reads until the server closes the connection; anything but a
// clean EOF (data, a reset, the timeout) is an error.
func (c *rawClient) waitClosed() error {
	if err := c.conn.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		return err
	}
	n, err := c.br.Read(make([]byte, 1))
	if n > 0 {
		return errors.New("unexpected data after the last response")
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("want EOF, got %w", err)
	}
	return nil
}

// useFreshListeners gives the test a listener table of its own, read from
// the process environment at its first use (after the test's Setenv), and
// another one at cleanup, so no test sees a table another one read.
func useFreshListeners(t testing.TB) {
	t.Helper()
	listeners = newListenerSet(os.LookupEnv, os.Getpid())
	t.Cleanup(func() { listeners = newListenerSet(os.LookupEnv, os.Getpid()) })
}
