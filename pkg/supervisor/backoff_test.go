package supervisor

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRestartDelay(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{failures: 0, want: 0},
		{failures: 1, want: 0},
		{failures: 2, want: 100 * time.Millisecond},
		{failures: 3, want: 200 * time.Millisecond},
		{failures: 4, want: 400 * time.Millisecond},
		{failures: 10, want: 25600 * time.Millisecond},
		{failures: 11, want: 30 * time.Second},
		{failures: 1000, want: 30 * time.Second},
	}
	for _, tt := range tests {
		if got := restartDelay(tt.failures); got != tt.want {
			t.Errorf("restartDelay(%d) = %v, want %v", tt.failures, got, tt.want)
		}
	}
}

// judgeExit: an exit counts toward the backoff when the program did not
// get going (not ready, or ready and soon gone on its own without serving),
// never when a working child was killed from outside.
func TestJudgeExit(t *testing.T) {
	const brief = 100 * time.Millisecond
	tests := []struct {
		name        string
		facts       exitFacts
		wantFailure bool
	}{
		{name: "exit code before ready", facts: exitFacts{status: exitWith(1)}, wantFailure: true},
		{name: "exit 0 before ready", facts: exitFacts{status: exitWith(0)}, wantFailure: true},
		{name: "SIGKILL before ready", facts: exitFacts{status: signalled(unix.SIGKILL)}, wantFailure: true},
		{name: "SIGSEGV before ready", facts: exitFacts{status: signalled(unix.SIGSEGV)}, wantFailure: true},
		{name: "page written before ready", facts: exitFacts{status: exitWith(1), served: true}, wantFailure: true},
		{name: "hung before ready", facts: exitFacts{status: signalled(unix.SIGKILL), hung: true}, wantFailure: true},

		{name: "ready, SIGKILL at once", facts: exitFacts{status: signalled(unix.SIGKILL), ready: true}},
		{name: "ready, SIGKILL soon", facts: exitFacts{status: signalled(unix.SIGKILL), ready: true, readyFor: brief}},
		{name: "ready, SIGTERM soon", facts: exitFacts{status: signalled(unix.SIGTERM), ready: true, readyFor: brief}},
		{name: "ready, SIGINT soon", facts: exitFacts{status: signalled(unix.SIGINT), ready: true, readyFor: brief}},
		{name: "ready, SIGHUP soon", facts: exitFacts{status: signalled(unix.SIGHUP), ready: true, readyFor: brief}},
		{name: "ready, SIGQUIT soon", facts: exitFacts{status: signalled(unix.SIGQUIT), ready: true, readyFor: brief}},
		{name: "ready, SIGUSR1 soon", facts: exitFacts{status: signalled(unix.SIGUSR1), ready: true, readyFor: brief}},

		{name: "ready, exit 1 soon", facts: exitFacts{status: exitWith(1), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, exit 0 soon", facts: exitFacts{status: exitWith(0), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGSEGV soon", facts: exitFacts{status: signalled(unix.SIGSEGV), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGABRT soon", facts: exitFacts{status: signalled(unix.SIGABRT), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGBUS soon", facts: exitFacts{status: signalled(unix.SIGBUS), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGILL soon", facts: exitFacts{status: signalled(unix.SIGILL), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGFPE soon", facts: exitFacts{status: signalled(unix.SIGFPE), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, SIGPIPE soon", facts: exitFacts{status: signalled(unix.SIGPIPE), ready: true, readyFor: brief}, wantFailure: true},
		{name: "ready, hung soon", facts: exitFacts{status: signalled(unix.SIGKILL), ready: true, readyFor: brief, hung: true}, wantFailure: true},
		{name: "ready, exit 1 just short of the reset", facts: exitFacts{status: exitWith(1), ready: true, readyFor: BackoffReset - time.Millisecond}, wantFailure: true},

		{name: "ready, exit 1 after serving", facts: exitFacts{status: exitWith(1), ready: true, readyFor: brief, served: true}, wantFailure: true},
		{name: "ready, SIGSEGV after serving", facts: exitFacts{status: signalled(unix.SIGSEGV), ready: true, served: true}, wantFailure: true},
		{name: "ready, hung after serving", facts: exitFacts{status: signalled(unix.SIGKILL), ready: true, served: true, hung: true}, wantFailure: true},
		{name: "ready, exit 0 after serving", facts: exitFacts{status: exitWith(0), ready: true, readyFor: brief, served: true}},
		{name: "ready, SIGKILL after serving", facts: exitFacts{status: signalled(unix.SIGKILL), ready: true, readyFor: brief, served: true}},
		{name: "ready, exit 1 after the reset", facts: exitFacts{status: exitWith(1), ready: true, readyFor: BackoffReset}},
		{name: "ready, SIGABRT after the reset", facts: exitFacts{status: signalled(unix.SIGABRT), ready: true, readyFor: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judgeExit(tt.facts); got != tt.wantFailure {
				t.Errorf("judgeExit(%+v) = %v, want %v", tt.facts, got, tt.wantFailure)
			}
		})
	}
}

func TestFailuresAfterExit(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		facts    exitFacts
		want     int
	}{
		{name: "never ready", failures: 3, facts: exitFacts{status: exitWith(1)}, want: 4},
		{name: "ready briefly, own exit", failures: 3, facts: exitFacts{status: exitWith(1), ready: true, readyFor: 900 * time.Millisecond}, want: 4},
		{name: "ready long enough resets", failures: 7, facts: exitFacts{status: exitWith(1), ready: true, readyFor: BackoffReset}, want: 0},
		{name: "killed from outside resets", failures: 7, facts: exitFacts{status: signalled(unix.SIGKILL), ready: true}, want: 0},
		{name: "first failure", failures: 0, facts: exitFacts{status: exitWith(1), ready: true, readyFor: time.Millisecond}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := failuresAfterExit(tt.failures, tt.facts)
			if got != tt.want {
				t.Errorf("failuresAfterExit = %d, want %d", got, tt.want)
			}
			if tt.want <= 1 && restartDelay(got) != 0 {
				t.Errorf("restart after %v, want at once", restartDelay(got))
			}
		})
	}
}

// addAccepts saturates: a page that claims 2^64-1 accepts cannot make a
// slot's total wrap to a small number.
func TestAddAccepts(t *testing.T) {
	const most = ^uint64(0)
	tests := []struct{ a, b, want uint64 }{
		{a: 0, b: 0, want: 0},
		{a: 1, b: 2, want: 3},
		{a: most - 1, b: 1, want: most},
		{a: most - 1, b: 2, want: most},
		{a: most, b: most, want: most},
		{a: 5, b: most, want: most},
	}
	for _, tt := range tests {
		if got := addAccepts(tt.a, tt.b); got != tt.want {
			t.Errorf("addAccepts(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// exitWith and signalled are wait statuses, written out here rather than
// taken from the Linux fakes: the backoff is pure and tested everywhere.
func exitWith(code int) unix.WaitStatus         { return unix.WaitStatus(code << 8) }
func signalled(sig unix.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }
