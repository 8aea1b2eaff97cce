//go:build !linux

package freeze

import (
	"context"
	"errors"
	"fmt"
)

// errUnsupported is Freeze's answer off Linux, where neither cgroups nor
// /proc tell when a process has stopped.
var errUnsupported = fmt.Errorf("freeze: Linux-only: %w", errors.ErrUnsupported)

// Freeze fails off Linux; its Frozen has nothing to thaw.
func Freeze(ctx context.Context, targets []Target) (*Frozen, error) {
	return &Frozen{}, errUnsupported
}

// Thaw does nothing off Linux, where Freeze did nothing.
func (f *Frozen) Thaw() error { return nil }
