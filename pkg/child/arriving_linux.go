package child

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// arrivingRecheck is how soon a drain looks again at an idle connection
// that had bytes waiting.
const arrivingRecheck = 50 * time.Millisecond

// requestArriving reports whether bytes wait unread in c's socket: a
// client has started sending its next request, and closing the
// connection now would drop it. net/http marks a connection active only
// once it has read the request's header, so its state alone cannot tell.
func requestArriving(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	arriving := false
	var buf [1]byte
	raw.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		arriving = err == nil && n > 0
	})
	return arriving
}
