package main

import (
	"net"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/child"
	"golang.org/x/sys/unix"
)

// A drain in master socket mode loses no datagram: each one the child
// read is answered, and those it did not read stay on the socket the
// master holds, for the next child. Many drains, each at a moment of its
// own within a burst.
func TestServeUDPDrainLosesNothing(t *testing.T) {
	t.Parallel()
	const rounds, burst = 200, 64
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	answers := make([]byte, 16)
	lost := 0
	for round := range rounds {
		// The master's socket, and the child's copy of it.
		master, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		f, err := master.File()
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		drain := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- serveUDP(&child.PacketConn{UDPConn: c.(*net.UDPConn)}, []byte("a"), drain) }()
		for i := range burst {
			if _, err := client.WriteToUDP([]byte("q"), master.LocalAddr().(*net.UDPAddr)); err != nil {
				t.Fatal(err)
			}
			if i == round%burst {
				close(drain)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		answered := 0
		client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			if _, _, err := client.ReadFromUDP(answers); err != nil {
				break
			}
			answered++
		}
		raw, _ := master.SyscallConn()
		left := 0
		raw.Read(func(fd uintptr) bool {
			for {
				if _, _, err := unix.Recvfrom(int(fd), answers, unix.MSG_DONTWAIT); err != nil {
					return true
				}
				left++
			}
		})
		master.Close()
		lost += burst - answered - left
	}
	if lost != 0 {
		t.Errorf("%d of %d datagrams neither answered nor left on the master's socket over %d drains", lost, rounds*burst, rounds)
	}
}
