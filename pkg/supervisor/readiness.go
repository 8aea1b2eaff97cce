package supervisor

import (
	"fmt"
	"strings"
	"time"
)

// Readiness modes (--ready): how the master learns that a new child is
// ready. Whatever the mode, a child that sends READY=1 is ready at once.
const (
	// ReadyNotify waits for READY=1 on NOTIFY_SOCKET (sd_notify).
	ReadyNotify = "notify"
	// ReadyListen waits until the kernel shows the child's processes
	// waiting for connections: a listening socket on the address (child
	// socket mode), or the socket the master gave it registered in an
	// epoll set or waited on in accept, poll or select (master mode).
	ReadyListen = "listen"
	// ReadyDelay takes a child that is still alive after a delay as
	// ready, as einhorn's timer ack does.
	ReadyDelay = "delay"
)

// Readiness is a value of --ready.
type Readiness struct {
	// Mode is ReadyNotify, ReadyListen or ReadyDelay.
	Mode string
	// Delay is how long a child must live to be ready, in ReadyDelay.
	Delay time.Duration
}

// String returns r as --ready takes it.
func (r Readiness) String() string {
	if r.Mode == ReadyDelay {
		return fmt.Sprintf("%s:%v", ReadyDelay, r.Delay)
	}
	return r.Mode
}

// ParseReadiness reads notify, listen or delay:D.
func ParseReadiness(s string) (Readiness, error) {
	switch s {
	case ReadyNotify, ReadyListen:
		return Readiness{Mode: s}, nil
	}
	if d, ok := strings.CutPrefix(s, ReadyDelay+":"); ok {
		delay, err := time.ParseDuration(d)
		if err != nil || delay <= 0 {
			return Readiness{}, fmt.Errorf("%q: the delay is not a positive duration such as 2s", s)
		}
		return Readiness{Mode: ReadyDelay, Delay: delay}, nil
	}
	return Readiness{}, fmt.Errorf("%q is not notify, listen or delay:D (delay:2s)", s)
}
