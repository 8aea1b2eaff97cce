//go:build !linux

package steer

// Steerer is the steering program of one reuseport group; outside Linux
// there is none, and Load always fails.
type Steerer struct{}

// Load fails with ErrUnsupported outside Linux.
func Load(maxSlots int) (*Steerer, error) {
	if err := checkMax(maxSlots); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Supported returns ErrUnsupported outside Linux.
func Supported() error {
	_, err := Load(MaxSlots)
	return err
}

// Detach returns ErrUnsupported outside Linux.
func Detach(listenerFD int) error { return ErrUnsupported }

// Attach returns ErrUnsupported.
func (s *Steerer) Attach(listenerFD int) error { return ErrUnsupported }

// SetSocket returns ErrUnsupported.
func (s *Steerer) SetSocket(slot int, fd int) error { return ErrUnsupported }

// ClearSocket returns ErrUnsupported.
func (s *Steerer) ClearSocket(slot int) error { return ErrUnsupported }

// SetSlots returns ErrUnsupported.
func (s *Steerer) SetSlots(n int) error { return ErrUnsupported }

// SetHealthy returns ErrUnsupported.
func (s *Steerer) SetHealthy(slot int, healthy bool) error { return ErrUnsupported }

// Close does nothing.
func (s *Steerer) Close() error { return nil }

// Migrates reports false: nothing is steered here.
func (s *Steerer) Migrates() bool { return false }

// Connections returns ErrUnsupported.
func (s *Steerer) Connections(slots int) ([]uint64, uint64, error) { return nil, 0, ErrUnsupported }

// Runs is not supported off Linux.
func (s *Steerer) Runs() (uint64, error) { return 0, ErrUnsupported }

// Requeue returns ErrUnsupported.
func (s *Steerer) Requeue(slot, fd int) (uint32, error) { return 0, ErrUnsupported }
