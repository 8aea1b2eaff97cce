//go:build !linux

package cgroup

import "context"

// Freeze fails off Linux.
func (g *Group) Freeze(ctx context.Context) (alreadyFrozen bool, err error) {
	return false, errUnsupported
}

// Thaw fails off Linux.
func (g *Group) Thaw() error { return errUnsupported }
