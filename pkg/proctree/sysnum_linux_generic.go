//go:build linux && !amd64 && !arm64

package proctree

// waitCalls is empty on the architectures whose system call numbers and
// fd_set words (32 bits on 32-bit ones) are not checked: there, WaitsOn
// sees only epoll sets.
var waitCalls = map[int64]waitKind{}
