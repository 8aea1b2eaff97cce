package freeze

import (
	"os"
	"runtime"
)

// childEnv switches the test binary into a busy child (see runChild).
const childEnv = "PREFORK_FREEZE_TEST_CHILD"

// runChild runs the test binary as a busy Go child when childEnv says so:
// a goroutine spinning on each P, so that several threads are on a CPU
// when SIGSTOP arrives, as in a loaded server. It never returns then; the
// test kills it. Otherwise it reports false.
func runChild() bool {
	if os.Getenv(childEnv) != "busy" {
		return false
	}
	for range runtime.GOMAXPROCS(0) {
		go spin()
	}
	spin()
	return true
}

// spin loops until the process is killed.
func spin() {
	var n uint64
	for {
		n++
		if n == 0 {
			runtime.Gosched()
		}
	}
}
