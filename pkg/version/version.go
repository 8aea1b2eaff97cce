// Package version is the master's version (temporary stand-in; helper A's replaces it).
package version

// String returns the version.
func String() string { return "dev" }
