//go:build !linux

package metrics

// NewPage returns ErrUnsupported off Linux.
func NewPage() (*Page, error) { return nil, ErrUnsupported }

// Close does nothing off Linux, where no Page is ever made.
func (p *Page) Close() error { return nil }

// OpenCounter returns ErrUnsupported off Linux and leaves fd open.
func OpenCounter(fd int) (*Counter, error) { return nil, ErrUnsupported }

// Close does nothing off Linux, where no Counter is ever made.
func (c *Counter) Close() error { return nil }

// LinuxKernel answers nothing off Linux.
var LinuxKernel = Kernel{
	ListenQueues:    func(int) (map[uint64]uint64, error) { return nil, ErrUnsupported },
	ListenOverflows: func() (uint64, error) { return 0, ErrUnsupported },
	ListenerOf:      func(int, map[uint64]uint64) (uint64, bool) { return 0, false },
}
