// Package counters holds the shared counter page a prefork master gives
// each child through PREFORK_COUNTERS_FD (docs/socket-modes.md, "The child contract").
//
// Layout: the page is a sealed memfd of one memory page, mapped
// MAP_SHARED by the master (Page) and by the child (Counter).
//
//	offset 0, 8 bytes: accepted connections, a little-endian uint64
//	offset 8 onwards:  reserved, zero
//
// Invariants: only the child writes the page, and only with an atomic
// add of one per accepted connection; the master only loads it. The
// value never decreases while the page lives. Counting costs one atomic
// add in the child: no syscall and no allocation per connection. The
// memfd is sealed against shrinking and growing, so a mapping of it can
// never fault (SIGBUS) on a truncated file.
//
// Native atomics are used on the little-endian layout, so the package
// supports little-endian machines only (amd64, arm64, ...); on a
// big-endian one NewPage and OpenCounter return ErrBigEndian. It works on
// Linux only; elsewhere both return ErrUnsupported.
package counters
