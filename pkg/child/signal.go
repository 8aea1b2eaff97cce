package child

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// drain is the one piece of package state: signal dispositions belong to
// the process, so the channel they close is shared by every caller.
var drain struct {
	once sync.Once
	ch   chan struct{}
}

// Draining returns a channel that is closed, once, when the child must
// drain: on SIGTERM, and on SIGINT only when the process runs standalone
// (PREFORK_SLOT unset). Under a master SIGINT is ignored: a terminal
// Ctrl-C reaches the whole process group, and it is the master that
// decides which children drain. The master starts children with a
// parent-death signal of SIGTERM, so its death also closes the channel.
//
// The first call installs the signal handlers; call it early (Serve does)
// so a SIGTERM is not met by the default action, which kills the process.
// Later SIGTERMs are swallowed: the master escalates with SIGKILL.
func Draining() <-chan struct{} {
	drain.once.Do(func() {
		drain.ch = make(chan struct{})
		_, supervised := nonEmpty(os.LookupEnv, envSlot)
		notify, ignore := drainSignals(supervised)
		// signal.Ignore with no arguments would ignore every signal.
		if len(ignore) > 0 {
			signal.Ignore(ignore...)
		}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, notify...)
		go func() {
			<-sigs
			close(drain.ch)
		}()
	})
	return drain.ch
}

// drainSignals returns the signals that start a drain and those to ignore.
func drainSignals(supervised bool) (notify, ignore []os.Signal) {
	if supervised {
		return []os.Signal{syscall.SIGTERM}, []os.Signal{syscall.SIGINT}
	}
	return []os.Signal{syscall.SIGTERM, syscall.SIGINT}, nil
}
