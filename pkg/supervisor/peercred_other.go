//go:build !linux

package supervisor

import "net"

// PeerCred is Linux only.
func PeerCred(net.Conn) (uid, pid int, err error) { return 0, 0, errUnsupported }
