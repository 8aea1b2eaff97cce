package sdwatchdog

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// Names of the variables (sd_watchdog_enabled(3)).
const (
	// EnvUSec is the watchdog timeout in microseconds, a positive decimal
	// integer.
	EnvUSec = "WATCHDOG_USEC"
	// EnvPID is the pid the watchdog is meant for; unset means the
	// process that reads it.
	EnvPID = "WATCHDOG_PID"
)

// Enabled returns the watchdog timeout the environment gives this process,
// as Parse does with os.LookupEnv and os.Getpid.
func Enabled() (time.Duration, error) {
	return Parse(os.LookupEnv, os.Getpid())
}

// Parse returns the watchdog timeout the variables that lookup finds give
// the process pid. lookup is os.LookupEnv, or a map in tests. It returns
// one of:
//
//   - (0, nil): no watchdog for pid: WATCHDOG_USEC is unset or empty, or
//     WATCHDOG_PID names another pid, whatever WATCHDOG_USEC says;
//   - (0, err): WATCHDOG_PID is not a number, or WATCHDOG_USEC, meant for
//     pid, is not a positive count of microseconds that fits a
//     time.Duration; err names the variable;
//   - (d, nil): pid has a watchdog of timeout d, and should ping every d/2.
func Parse(lookup func(name string) (string, bool), pid int) (time.Duration, error) {
	usec, ok := nonEmpty(lookup, EnvUSec)
	if !ok {
		return 0, nil
	}
	if s, ok := nonEmpty(lookup, EnvPID); ok {
		target, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", EnvPID, err)
		}
		if target != pid {
			return 0, nil
		}
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", EnvUSec, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("parse %s=%q: must be positive", EnvUSec, usec)
	}
	if n > math.MaxInt64/int64(time.Microsecond) {
		return 0, fmt.Errorf("parse %s=%q: too large", EnvUSec, usec)
	}
	return time.Duration(n) * time.Microsecond, nil
}

// nonEmpty treats an empty variable as unset, as shells and systemd units
// make it easy to set one to "" by accident.
func nonEmpty(lookup func(string) (string, bool), name string) (string, bool) {
	v, ok := lookup(name)
	return v, ok && v != ""
}
