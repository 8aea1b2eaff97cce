//go:build !linux

package counters

// NewPage returns ErrUnsupported off Linux.
func NewPage() (*Page, error) { return nil, ErrUnsupported }

// Close does nothing off Linux, where no Page is ever made.
func (p *Page) Close() error { return nil }

// OpenCounter returns ErrUnsupported off Linux and leaves fd open.
func OpenCounter(fd int) (*Counter, error) { return nil, ErrUnsupported }

// Close does nothing off Linux, where no Counter is ever made.
func (c *Counter) Close() error { return nil }

// AdoptPage is not supported here.
func AdoptPage(fd int) (*Page, error) { return nil, ErrUnsupported }
