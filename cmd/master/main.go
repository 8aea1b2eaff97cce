// Command master is prefork's supervisor and its command-line client.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/prefork/prefork/pkg/supervisor"
	"github.com/urfave/cli/v2"
)

// Exit codes.
const (
	exitFailure  = 1 // the run failed, or a client request failed
	exitBadInput = 2 // bad flags, config or command: nothing was started
	exitDrainCut = 3 // stopped on request, but a child was killed at the drain timeout
)

func init() {
	// main runs on the main thread, which supervisor.RunMain lends to the
	// spawner: the thread an upgrade in place execs on, and that the
	// children's parent-death signal is tied to (see RunMain).
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == supervisor.ShimCommand {
		// Between fork and the command in master socket mode, where the
		// native exec shim is missing (not amd64) or cannot run; see
		// ExecShim and execShimPath in pkg/supervisor.
		err := supervisor.ExecShim(os.Args[2:])
		fmt.Fprintf(os.Stderr, "master: %v\n", err)
		os.Exit(127)
	}
	os.Exit(supervisor.RunMain(func() int { return run(os.Args) }))
}

// run executes the command line and returns the process exit code. Every
// error is one line on stderr.
func run(args []string) int {
	err := newApp().Run(args)
	if err == nil {
		return 0
	}
	code := exitFailure
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	sayBounded(fmt.Sprintf("master: %v\n", err))
	return code
}

// sayBounded writes the last line of a run to stderr, waiting at most
// logFlushTimeout: a master whose stderr nobody reads (a stuck log
// pipeline) must still exit.
func sayBounded(line string) {
	if stderrStuck.Load() {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		os.Stderr.WriteString(line)
	}()
	select {
	case <-done:
	case <-time.After(logFlushTimeout):
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "master",
		Usage: "a prefork supervisor: N SO_REUSEPORT children, crash restarts, zero-downtime reloads",
		// Errors are printed once, by run, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		CommandNotFound: func(_ *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "master: no command %q; try run, status, reload, scale, upgrade, stop or version\n", name)
			os.Exit(exitBadInput)
		},
		Commands: []*cli.Command{runCommand(), statusCommand(), reloadCommand(), scaleCommand(), stopCommand(),
			upgradeCommand(), versionCommand()},
	}
}

// usageError turns a flag parsing error into one line and exit code 2,
// instead of the help text urfave/cli prints by default.
func usageError(_ *cli.Context, err error, _ bool) error {
	return cli.Exit(err.Error(), exitBadInput)
}
