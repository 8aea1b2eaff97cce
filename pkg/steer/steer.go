package steer

import (
	"errors"
	"fmt"
)

// MaxSlots is the largest number of slots a Steerer can be loaded for. It
// equals the supervisor's MaxWorkers and sizes the maps; the program's cost
// does not grow with it.
const MaxSlots = 4096

// ErrUnsupported is wrapped by every error of Load and Supported: steering
// cannot work here. The error's text says why (permission, kernel, the
// verifier's last lines).
var ErrUnsupported = errors.New("steer: unsupported")

// ErrNotMigrating is wrapped by the error of Requeue when the program was
// not loaded to choose for migrating connections (Linux before 5.14):
// shutting the listener down would then reset its queue, so Requeue does
// nothing.
var ErrNotMigrating = errors.New("steer: the program does not choose for migrating connections (Linux 5.14+ needed)")

// ErrListenerLost is wrapped by the error of Requeue when the listener was
// shut down but could not rejoin its group on the same port: it no longer
// takes the group's connections. Close it and give the slot a new
// listener.
var ErrListenerLost = errors.New("steer: the listener left its reuseport group")

// checkMax validates the maxSlots argument of Load.
func checkMax(maxSlots int) error {
	if maxSlots < 1 || maxSlots > MaxSlots {
		return fmt.Errorf("steer: max slots %d is out of range 1..%d", maxSlots, MaxSlots)
	}
	return nil
}

// spareList returns the healthy slots among 0..n-1 in slot order: the list
// the program spreads an unhealthy slot's connections over.
func spareList(n int, healthy []bool) []uint32 {
	var list []uint32
	for i := 0; i < n && i < len(healthy); i++ {
		if healthy[i] {
			list = append(list, uint32(i))
		}
	}
	return list
}

// reciprocalScale is the kernel's reciprocal_scale: it maps a 32-bit value
// uniformly onto 0..n-1 without a division, as the program does.
func reciprocalScale(v uint32, n uint32) uint32 {
	return uint32((uint64(v) * uint64(n)) >> 32)
}

// probes is how many entries of the spares list the program tries (the
// first at a place chosen by the hash, then the following ones) before it
// lets the kernel choose. An entry fails only when its slot has no socket
// in the array or the list is being rewritten, so a few would do; the tries
// are unrolled, and 64 cost about 2,000 instructions.
const probes = 64

// pick is the program's choice in Go, for the tests and for reading: the
// slot a connection with this hash goes to, given n, the health of every
// slot and which slots have a socket, or -1 when the kernel chooses.
func pick(hash uint32, n int, healthy, hasSocket []bool) int {
	if n <= 0 {
		return -1
	}
	ok := func(s int) bool { return s < n && healthy[s] && hasSocket[s] }
	idx := int(reciprocalScale(hash, uint32(n)))
	if ok(idx) {
		return idx
	}
	spares := spareList(n, healthy)
	h := uint32(len(spares))
	if h == 0 {
		return -1
	}
	pos := reciprocalScale(uint32(uint64(hash)*uint64(n)), h) // low 32 bits of hash*n
	for t := uint32(0); t < probes && t < h; t++ {
		if s := int(spares[(pos+t)%h]); ok(s) {
			return s
		}
	}
	return -1
}
