//go:build !linux

package sockopt

// AcceptQueue is Linux-only; elsewhere it always fails.
func AcceptQueue(fd int) (queued, backlog uint32, err error) {
	return 0, 0, ErrUnsupported
}
