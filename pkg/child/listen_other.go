//go:build !linux

package child

// checkListening does nothing off Linux; net.FileListener still rejects a
// descriptor that is not a socket.
func checkListening(fd int) error {
	return nil
}
