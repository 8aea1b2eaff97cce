//go:build !linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errUnsupported is every answer off Linux, where there are no cgroups.
var errUnsupported = fmt.Errorf("child cgroups: cgroup v2 is Linux-only: %w", errors.ErrUnsupported)

// Own fails off Linux; the master falls back to process-group kills.
func Own() (*Parent, error) { return nil, errUnsupported }

// New fails off Linux.
func (p *Parent) New(name string) (*Group, error) { return nil, errUnsupported }

// Open fails off Linux.
func (g *Group) Open() (int, error) { return -1, errUnsupported }

// Procs fails off Linux.
func (g *Group) Procs() ([]int, error) { return nil, errUnsupported }

// Populated fails off Linux.
func (g *Group) Populated() (bool, error) { return false, errUnsupported }

// Kill fails off Linux.
func (g *Group) Kill() error { return errUnsupported }

// CPU is Linux-only; elsewhere it always fails.
func (g *Group) CPU() (time.Duration, error) { return 0, errUnsupported }

// Remove fails off Linux.
func (g *Group) Remove(ctx context.Context) error { return errUnsupported }
