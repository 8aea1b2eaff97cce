//go:build !linux

package metrics

import "errors"

// errUnsupported is what the kernel readers answer off Linux.
var errUnsupported = errors.New("metrics: socket state unsupported on this platform")

// LinuxKernel answers nothing off Linux.
var LinuxKernel = Kernel{
	ListenQueues:    func(int) (map[uint64]uint64, error) { return nil, errUnsupported },
	ReceiveQueues:   func(int) (map[uint64]uint64, error) { return nil, errUnsupported },
	ListenOverflows: func() (uint64, error) { return 0, errUnsupported },
	ListenerOf:      func(int, map[uint64]uint64) (uint64, bool) { return 0, false },
}
