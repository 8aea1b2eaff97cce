package main

import "os"

// newBallast returns n bytes whose every page was written, so that they
// are resident (a fresh allocation is backed by the zero page until
// written). The caller keeps the slice alive for as long as the size
// should count.
func newBallast(n int64) []byte {
	b := make([]byte, n)
	page := os.Getpagesize()
	for i := 0; i < len(b); i += page {
		b[i] = 1
	}
	return b
}
