//go:build !linux

package child

import (
	"net"
	"time"
)

const arrivingRecheck = 50 * time.Millisecond

// requestArriving cannot look into the socket here; the grace alone rules.
func requestArriving(net.Conn) bool { return false }
