package child

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Variables the master sets for every child (docs/socket-modes.md, "The child contract").
const (
	envListen       = "PREFORK_LISTEN"
	envSlot         = "PREFORK_SLOT"
	envGeneration   = "PREFORK_GENERATION"
	envWorkers      = "PREFORK_WORKERS"
	envDrainTimeout = "PREFORK_DRAIN_TIMEOUT"
)

// Info is what the master tells a child about its place. Every field is
// zero when its variable is unset (or empty), as it is when the program
// runs without a master.
type Info struct {
	// Slot is the child's position 0..Workers-1 (PREFORK_SLOT). It
	// survives restarts and reloads.
	Slot int
	// Generation is the number of successful reloads, from 1
	// (PREFORK_GENERATION).
	Generation int
	// Workers is the number of children per generation (PREFORK_WORKERS).
	Workers int
	// Supervised reports whether PREFORK_SLOT is set, that is whether a
	// prefork master started this process; it tells slot 0 from no slot.
	Supervised bool
	// DrainTimeout is how long the master lets a draining child live
	// (PREFORK_DRAIN_TIMEOUT, a Go duration); zero means no limit.
	DrainTimeout time.Duration
}

// Env reads Info from the environment. A variable that is set but
// malformed (not a number, negative, not a duration) is an error. The
// sd_notify variables the master also sets (NOTIFY_SOCKET, and
// WATCHDOG_USEC under --watchdog) are not part of Info: Ready uses them.
func Env() (Info, error) {
	return parseEnv(os.LookupEnv)
}

// lookupFunc is os.LookupEnv, or a map in tests.
type lookupFunc func(name string) (string, bool)

// parseEnv is Env without the process environment.
func parseEnv(lookup lookupFunc) (Info, error) {
	var info Info
	var err error
	_, info.Supervised = nonEmpty(lookup, envSlot)
	if info.Slot, err = envCount(lookup, envSlot); err != nil {
		return Info{}, err
	}
	if info.Generation, err = envCount(lookup, envGeneration); err != nil {
		return Info{}, err
	}
	if info.Workers, err = envCount(lookup, envWorkers); err != nil {
		return Info{}, err
	}
	if info.DrainTimeout, err = drainTimeout(lookup); err != nil {
		return Info{}, err
	}
	return info, nil
}

// nonEmpty treats an empty variable as unset, as shells and systemd units
// make it easy to set one to "" by accident.
func nonEmpty(lookup lookupFunc, name string) (string, bool) {
	v, ok := lookup(name)
	return v, ok && v != ""
}

// envCount parses a non-negative decimal integer; unset reads as 0.
func envCount(lookup lookupFunc, name string) (int, error) {
	s, ok := nonEmpty(lookup, name)
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", name, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("parse %s=%q: must not be negative", name, s)
	}
	return n, nil
}

// drainTimeout parses PREFORK_DRAIN_TIMEOUT; unset or zero means no limit.
func drainTimeout(lookup lookupFunc) (time.Duration, error) {
	s, ok := nonEmpty(lookup, envDrainTimeout)
	if !ok {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", envDrainTimeout, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("parse %s=%q: must not be negative", envDrainTimeout, s)
	}
	return d, nil
}
