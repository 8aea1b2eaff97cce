package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

// maxDatagram is the largest UDP payload, so no datagram is truncated.
const maxDatagram = 64 << 10

// serveUDP answers every datagram read on pc with answer, sent back to
// its sender, until drain is closed: reading then stops at once, the
// datagram already read is still answered, and pc is closed. Datagrams
// still queued in a socket this child bound are lost with it; a socket
// the master holds keeps them for the next child. A failed answer (the
// sender's address unreachable, a full buffer) is dropped, as UDP drops,
// and serving goes on.
func serveUDP(pc *child.PacketConn, answer []byte, drain <-chan struct{}) error {
	defer pc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-drain:
			// A read deadline in the past, not Close: Close could land
			// between a read and its answer, and the datagram read (taken
			// off the socket the next child of a master-held slot reads)
			// would never be answered. The deadline wakes a read that waits
			// and fails every later read before it takes a datagram.
			pc.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	buf := make([]byte, maxDatagram)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf) // counted on the page
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
			return nil // only the drain sets a deadline
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", pc.LocalAddr(), err)
		}
		_, _ = pc.WriteToUDPAddrPort(answer, from)
	}
}
