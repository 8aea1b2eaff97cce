//go:build !linux

package execshim

import "errors"

// ParentEnv names the environment variable that tells the shim the
// master's pid.
const ParentEnv = "PREFORK_SHIM_PARENT"

// ErrUnsupported is returned by Open where there is no native shim.
var ErrUnsupported = errors.New("execshim: no native shim on this operating system")

// Open is Linux-only.
func Open() (string, error) { return "", ErrUnsupported }
