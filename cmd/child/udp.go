package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prefork/prefork/pkg/child"
)

// maxDatagram is the largest UDP payload, so no datagram is truncated.
const maxDatagram = 64 << 10

// serveUDP answers every datagram read on pc with answer, sent back to
// its sender, until drain is closed: reading then stops at once (a read
// deadline in the past wakes the read in progress), the datagram read
// last is still answered, and serveUDP closes pc and returns nil. Closing
// pc to stop would race with that answer: a datagram read just before
// would be lost, though a socket the master holds keeps every one not yet
// read for the next child. Datagrams still queued in a socket this child
// bound are lost with it. A failed answer (the sender's address
// unreachable, a full buffer) is dropped, as UDP drops, and serving goes
// on.
func serveUDP(pc *child.PacketConn, answer []byte, drain <-chan struct{}) error {
	defer pc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-drain:
			_ = pc.SetReadDeadline(time.Now())
		case <-stop:
		}
	}()
	buf := make([]byte, maxDatagram)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf) // counted on the page
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", pc.LocalAddr(), err)
		}
		_, _ = pc.WriteToUDPAddrPort(answer, from)
	}
}
