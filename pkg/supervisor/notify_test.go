package supervisor

import (
	"strings"
	"testing"
	"time"
)

func TestParseNotify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want notification
	}{
		{name: "ready", in: "READY=1", want: notification{Ready: true}},
		{name: "ready with newline", in: "READY=1\n", want: notification{Ready: true}},
		{name: "ready among others", in: "STATUS=serving\nREADY=1\nMAINPID=42", want: notification{Ready: true, Status: "serving", MainPID: 42}},
		{name: "ready=0 is not ready", in: "READY=0", want: notification{}},
		{name: "stopping", in: "STOPPING=1", want: notification{Stopping: true}},
		{name: "reloading", in: "RELOADING=1\nMONOTONIC_USEC=123", want: notification{Reloading: true}},
		{name: "watchdog", in: "WATCHDOG=1", want: notification{Watchdog: true}},
		{name: "garbage lines skipped", in: "nonsense\n=\nREADY=1", want: notification{Ready: true}},
		{name: "bad mainpid ignored", in: "MAINPID=x", want: notification{}},
		{name: "empty", in: "", want: notification{}},
		{name: "status with equals", in: "STATUS=a=b", want: notification{Status: "a=b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseNotify([]byte(tt.in)); got != tt.want {
				t.Errorf("parseNotify(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseStatPPID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr bool
	}{
		{name: "plain", in: "1234 (child) S 77 1234 1234 0 -1", want: 77},
		{name: "spaces and parens in name", in: "1234 (my (odd) prog) R 9 1 1", want: 9},
		{name: "no name", in: "1234 child S 77", wantErr: true},
		{name: "truncated", in: "1234 (child) S", wantErr: true},
		{name: "bad ppid", in: "1234 (child) S x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatPPID([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatPPID(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The gate lets a child's own datagrams through up to its own budget and
// every other pid up to a shared one, per second, and counts the rest.
func TestNotifyGate(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	g := newNotifyGate(1000)
	g.add(10)
	admitted := func(pid, n int, at time.Time) int {
		got := 0
		for range n {
			if g.admit(pid, 1000, at) {
				got++
			}
		}
		return got
	}
	if got := admitted(10, notifyPerChild+5, t0); got != notifyPerChild {
		t.Errorf("child admitted %d of %d, want %d", got, notifyPerChild+5, notifyPerChild)
	}
	// A flood of others uses their budget, not the child's.
	if got := admitted(99, 3*notifyOthers, t0); got != notifyOthers {
		t.Errorf("others admitted %d, want %d", got, notifyOthers)
	}
	if got := admitted(98, 1, t0.Add(999*time.Millisecond)); got != 0 {
		t.Errorf("another pid admitted in the same window: %d", got)
	}
	g.add(11)
	if got := admitted(11, 1, t0.Add(time.Millisecond)); got != 1 {
		t.Error("a new child is starved by the others' flood")
	}
	// A new window, new budgets.
	t1 := t0.Add(time.Second)
	if got := admitted(10, 1, t1); got != 1 {
		t.Error("child not admitted in the next window")
	}
	if got := admitted(99, 1, t1); got != 1 {
		t.Error("others not admitted in the next window")
	}
	g.remove(10)
	if got := admitted(10, notifyOthers, t1.Add(time.Millisecond)); got != notifyOthers-1 {
		t.Errorf("a removed child's pid admitted %d, want the others' %d", got, notifyOthers-1)
	}

	r, ok := g.report(t1)
	wantTotal := uint64(5 + 2*notifyOthers + 1 + 1)
	if !ok || r.total != wantTotal || r.dropped != wantTotal || r.senders[10] != 5+1 || r.senders[99] != 2*notifyOthers || r.senders[98] != 1 {
		t.Errorf("report = %+v, %v; want 10:6 99:%d 98:1, total %d", r, ok, 2*notifyOthers, wantTotal)
	}
	if _, ok := g.report(t1.Add(time.Second)); ok {
		t.Error("a report with nothing dropped since")
	}
	admitted(99, notifyOthers+1, t1.Add(2*time.Second)) // one dropped
	if _, ok := g.report(t1.Add(3 * time.Second)); ok {
		t.Error("reported again before notifyReportEvery")
	}
	if r, ok := g.report(t1.Add(notifyReportEvery)); !ok || r.senders[99] != 1 || r.dropped != 1 || r.total != wantTotal+1 {
		t.Errorf("report after notifyReportEvery = %+v, %v", r, ok)
	}
	if g.dropCount() != wantTotal+1 {
		t.Errorf("dropCount = %d, want %d", g.dropCount(), wantTotal+1)
	}
}

// After notifyDropBurst drops in a slice, the reader waits for the slice's
// end.
func TestNotifyGatePause(t *testing.T) {
	t.Parallel()
	g := newNotifyGate(1000)
	t0 := time.Unix(1000, 0)
	for i := range notifyDropBurst {
		if d := g.pause(t0.Add(time.Duration(i) * time.Microsecond)); d != 0 {
			t.Fatalf("pause after %d drops = %v", i+1, d)
		}
	}
	at := t0.Add(3 * time.Millisecond)
	if d := g.pause(at); d != notifyDropSlice-3*time.Millisecond {
		t.Errorf("pause over the burst = %v, want %v", d, notifyDropSlice-3*time.Millisecond)
	}
	if d := g.pause(t0.Add(notifyDropSlice)); d != 0 {
		t.Errorf("pause in the next slice = %v, want 0", d)
	}
}

// Another user's datagrams never reach the loop, nor use up a budget: a
// child's worker of an allowed uid is still heard during their flood.
func TestNotifyGateOtherUsers(t *testing.T) {
	t.Parallel()
	g := newNotifyGate(1000)
	t0 := time.Unix(1000, 0)
	g.add(10)
	for range 10 * notifyOthers {
		if g.admit(50, 2000, t0) || g.admit(10, 2000, t0) {
			t.Fatal("a datagram of uid 2000 admitted")
		}
	}
	if !g.admit(11, 1000, t0) {
		t.Error("a worker of the master's uid starved by another user's flood")
	}
	if !g.admit(12, 0, t0) {
		t.Error("root not heard")
	}
	if g.admit(13, 3000, t0) {
		t.Error("uid 3000 heard before it was allowed")
	}
	g.allowUID(3000) // a --user generation
	if !g.admit(13, 3000, t0) {
		t.Error("uid 3000 not heard once allowed")
	}
	if r, ok := g.report(t0); !ok || r.dropped != 20*notifyOthers+1 || r.senders[50] != 10*notifyOthers {
		t.Errorf("report = %+v, %v", r, ok)
	}
}

// The gate keeps the names of at most maxReportedSenders pids, whatever
// the number of senders; the total counts them all.
func TestNotifyGateManySenders(t *testing.T) {
	t.Parallel()
	g := newNotifyGate(1000)
	t0 := time.Unix(1000, 0)
	for pid := range notifyOthers + 1000 {
		g.admit(pid+100, 1000, t0)
	}
	// One of the named pids sends again: still counted under its name.
	g.admit(100+notifyOthers, 1000, t0)
	r, ok := g.report(t0)
	if !ok || len(r.senders) != maxReportedSenders || r.dropped != 1001 || r.total != 1001 || r.senders[100+notifyOthers] != 2 {
		t.Errorf("report: %d senders, dropped %d, total %d, first named %d, %v; want %d, 1001, 1001, 2",
			len(r.senders), r.dropped, r.total, r.senders[100+notifyOthers], ok, maxReportedSenders)
	}
}

// FuzzParseNotify: any datagram decodes without panicking, and READY is
// set exactly when a line says READY=1.
func FuzzParseNotify(f *testing.F) {
	for _, seed := range []string{"READY=1", "STATUS=a=b\nREADY=1\nMAINPID=42", "READY=0\nREADY=1", "READY=1\nREADY=0",
		"\x00\n=\n", "MAINPID=-1", "MAINPID=99999999999999999999", "WATCHDOG=1\r\n", strings.Repeat("X=1\n", 1000)} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := parseNotify(data)
		var last string
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "READY="); ok {
				last = v
			}
		}
		if n.Ready != (last == "1") {
			t.Errorf("parseNotify(%q).Ready = %v; the last READY= says %q", data, n.Ready, last)
		}
		if n.MainPID < 0 {
			t.Errorf("parseNotify(%q).MainPID = %d", data, n.MainPID)
		}
	})
}
