//go:build !linux

package child

// checkListening does nothing off Linux; net.FileListener still rejects a
// descriptor that is not a socket.
func checkListening(fd int) error {
	return nil
}

// checkDatagram does nothing off Linux; net.FilePacketConn still rejects
// a descriptor that is not a socket.
func checkDatagram(fd int) error {
	return nil
}

// socketNetwork does not read the socket's type off Linux: "" leaves the
// listener's address to say it.
func socketNetwork(fd int) (string, error) {
	return "", nil
}

// closeOnExec does nothing off Linux, where no master passes sockets
// (and syscall.CloseOnExec does not take an int everywhere).
func closeOnExec(fd int) {}
