package supervisor

import (
	"testing"
	"time"
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

func TestFailuresAfterExit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name     string
		failures int
		readyAt  time.Time
		exitAt   time.Time
		want     int
	}{
		{name: "never ready", failures: 3, exitAt: t0, want: 4},
		{name: "ready briefly", failures: 3, readyAt: t0, exitAt: t0.Add(9 * time.Second), want: 4},
		{name: "ready long enough resets", failures: 7, readyAt: t0, exitAt: t0.Add(10 * time.Second), want: 1},
		{name: "first failure", failures: 0, readyAt: t0, exitAt: t0.Add(time.Second), want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failuresAfterExit(tt.failures, tt.readyAt, tt.exitAt); got != tt.want {
				t.Errorf("failuresAfterExit = %d, want %d", got, tt.want)
			}
		})
	}
}
