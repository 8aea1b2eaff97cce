package e2e

import (
	"strings"
	"testing"
	"time"
)

func logTime(t *testing.T, l logLine) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, l.str("time"))
	if err != nil {
		t.Fatalf("log line without a time: %v", l)
	}
	return ts
}

// No descriptor of the master leaks into a child: it holds stdin, stdout,
// stderr and its counter page (fd 3, named by PREFORK_COUNTERS_FD) only.
func TestChildInheritsOnlyStdio(t *testing.T) {
	t.Parallel()
	_, children := runFDList(t, 2)
	for slot, in := range children {
		if strings.Join(in.fds, ",") != "0,1,2,3" {
			t.Errorf("slot %d inherited descriptors:\n%s\nwant 0, 1, 2 and 3 only", slot, in.raw)
		}
		if !strings.HasPrefix(in.targets["3"], "/memfd:") || !strings.HasSuffix(in.activation, "PREFORK_COUNTERS_FD=3") {
			t.Errorf("slot %d: fd 3 is %s (%s), want the counter page named by PREFORK_COUNTERS_FD=3", slot, in.targets["3"], in.activation)
		}
		if in.targets["0"] != "/dev/null" {
			t.Errorf("slot %d: stdin is %s, want /dev/null", slot, in.targets["0"])
		}
	}
}
