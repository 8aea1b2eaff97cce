package child

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// closeWriter adds "Connection: close" to a response whose header is
// written once the drain has started, even when its handler began before:
// net/http then closes the connection right after that response, so the
// client moves to another child instead of sending its next request here.
// The header is set before the handler's first write, the only time it
// still counts. Flush, Hijack, ReadFrom (sendfile) and Unwrap (for
// http.ResponseController) pass through.
type closeWriter struct {
	http.ResponseWriter
	draining *atomic.Bool
	wrote    bool
}

// mark sets the header if it is still unsent and the drain has begun.
func (w *closeWriter) mark() {
	if !w.wrote && w.draining.Load() {
		w.Header().Set("Connection", "close")
	}
}

// commit marks the response and records that its header is on its way.
func (w *closeWriter) commit() {
	w.mark()
	w.wrote = true
}

// WriteHeader marks a final status; 1xx statuses are interim and leave the
// final header unsent.
func (w *closeWriter) WriteHeader(code int) {
	if code >= http.StatusOK {
		w.commit()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write marks the response before its first byte.
func (w *closeWriter) Write(p []byte) (int, error) {
	w.commit()
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps net/http's sendfile path: io.Copy uses the underlying
// writer's ReadFrom.
func (w *closeWriter) ReadFrom(r io.Reader) (int64, error) {
	w.commit()
	return io.Copy(w.ResponseWriter, r)
}

// Flush writes the header if needed, so it marks first.
func (w *closeWriter) Flush() {
	_ = w.FlushError()
}

// FlushError is what http.ResponseController.Flush calls.
func (w *closeWriter) FlushError() error {
	w.commit()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection to the handler; the drain stops tracking it.
func (w *closeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *closeWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
