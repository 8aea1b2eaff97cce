//go:build !linux

package sockopt

import "syscall"

// PacketControl is a net.ListenConfig Control function; prefork's socket
// sharing is Linux-only, so elsewhere it always fails.
func PacketControl(network, address string, c syscall.RawConn) error {
	return ErrUnsupported
}

// ListenPacketFD is Linux-only; elsewhere it always fails.
func ListenPacketFD(address string) (int, error) { return -1, ErrUnsupported }

// CheckFreePacket is Linux-only; elsewhere it always fails.
func CheckFreePacket(address string) error { return ErrUnsupported }

// ReceiveQueue is Linux-only; elsewhere it always fails.
func ReceiveQueue(fd int) (bytes uint32, err error) { return 0, ErrUnsupported }
