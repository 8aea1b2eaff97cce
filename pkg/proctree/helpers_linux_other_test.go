//go:build linux && !amd64

package proctree

// archModes has no extra ways of waiting off x86-64.
func archModes() map[string]waitMode { return nil }
