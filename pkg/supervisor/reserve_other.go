//go:build !linux

package supervisor

// followReservations and syncReservations are Linux only: the
// supervisor runs on Linux alone.
func (s *Supervisor) followReservations() {}
func (s *Supervisor) syncReservations()   {}
