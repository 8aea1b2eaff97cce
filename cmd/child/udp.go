package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/prefork/prefork/pkg/child"
)

// maxDatagram is the largest UDP payload, so no datagram is truncated.
const maxDatagram = 64 << 10

// serveUDP answers every datagram read on pc with answer, sent back to
// its sender, until drain is closed: it then closes pc, so reading stops
// at once, and returns nil. Datagrams still queued in a socket this
// child bound are lost with it; a socket the master holds keeps them for
// the next child. A failed answer (the sender's address unreachable, a
// full buffer) is dropped, as UDP drops, and serving goes on.
func serveUDP(pc *child.PacketConn, answer []byte, drain <-chan struct{}) error {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-drain:
			pc.Close()
		case <-stop:
		}
	}()
	buf := make([]byte, maxDatagram)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf) // counted on the page
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", pc.LocalAddr(), err)
		}
		_, _ = pc.WriteToUDPAddrPort(answer, from)
	}
}
