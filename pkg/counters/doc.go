// Package counters holds the shared counter page a prefork master gives
// each child through PREFORK_COUNTERS_FD (docs/socket-modes.md, "The child contract").
//
// Layout: the page is a sealed memfd of one memory page, mapped
// MAP_SHARED by the master (Page) and by the child (Counter).
//
//	offset 0, 8 bytes:        accepted connections over all stream listeners
//	offset 8, 8 bytes:        datagrams received over all packet listeners
//	offset 16 to 63:          reserved, zero
//	offset 64 + 8*i, 8 bytes: listener i's count, i < MaxListeners (64):
//	                          accepts for a stream listener, datagrams
//	                          for a packet one
//	offset 576 onwards:       reserved, zero
//
// Every counter is a little-endian uint64. Listener i is the i-th name of
// PREFORK_LISTENERS (docs/socket-modes.md); a child with one unnamed
// listener counts it as listener 0.
//
// Invariants: only the child writes the page, and only with atomic adds
// of one: per accepted connection, to its listener's counter and then to
// offset 0; per datagram read, to its listener's counter and then to
// offset 8 (Counter.Accept, Counter.Datagram; Counter.Inc adds to offset 0
// alone). The master only loads it, a total before the listeners'
// counters: in that order every unit of the total is found on a listener,
// except what Inc counted. The master gives those to the first stream
// listener. No value ever decreases while the page lives.
// Counting costs at most two atomic adds in the child: no syscall and no
// allocation. The memfd is sealed against shrinking and growing, so a
// mapping of it can never fault (SIGBUS) on a truncated file.
//
// Native atomics are used on the little-endian layout, so the package
// supports little-endian machines only (amd64, arm64, ...); on a
// big-endian one NewPage and OpenCounter return ErrBigEndian. It works on
// Linux only; elsewhere both return ErrUnsupported.
package counters
