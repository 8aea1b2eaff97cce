package supervisor

import (
	"strings"
	"testing"
)

// The descriptor budget grows with the workers, the socket mode, the
// output mode and the master's servers; a limit below it is one line.
func TestFDBudget(t *testing.T) {
	t.Parallel()
	base := validConfig()
	base.Metrics, base.Control, base.Steer = "", "", SteerOff
	tests := []struct {
		name   string
		mutate func(*Config)
		want   int
	}{
		{name: "one child", mutate: func(c *Config) { c.Workers = 1 }, want: fdBase + 2*fdPerChild},
		{name: "32 in master mode", mutate: func(c *Config) { c.Workers, c.Sockets = 32, SocketsMaster },
			want: fdBase + 2*32*(fdPerChild+fdPerSlotMaster)},
		{name: "master mode, 3 listeners", mutate: func(c *Config) {
			c.Workers, c.Sockets = 4, SocketsMaster
			c.Listen = Listeners{{Name: "a", Network: NetTCP, Addr: ":1"}, {Name: "b", Network: NetTCP, Addr: ":2"}, {Name: "c", Network: NetUDP, Addr: ":3"}}
		}, want: fdBase + 2*4*(fdPerChild+3*fdPerSlotMaster)},
		{name: "child mode, steered: a copy of each child's listener", mutate: func(c *Config) { c.Workers, c.Steer = 4, SteerAuto },
			want: fdBase + 2*4*(fdPerChild+fdPerSlotMaster)},
		{name: "prefix output", mutate: func(c *Config) { c.Workers, c.ChildOutput = 4, OutputPrefix },
			want: fdBase + 2*4*(fdPerChild+fdPerChildPrefix)},
		{name: "with both servers", mutate: func(c *Config) { c.Workers, c.Metrics, c.Control = 1, "127.0.0.1:9090", "/x" },
			want: fdBase + 2*fdPerChild + MetricsConnCap + ControlConnCap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base
			tt.mutate(&c)
			if got := fdsNeeded(c); got != tt.want {
				t.Errorf("fdsNeeded = %d, want %d", got, tt.want)
			}
		})
	}
	if err := fitFDs(248, 1024); err != nil {
		t.Errorf("fitFDs(248, 1024) = %v", err)
	}
	err := fitFDs(248, 64)
	if err == nil || !strings.Contains(err.Error(), "needs 248 file descriptors, the limit is 64 (ulimit -n)") {
		t.Errorf("fitFDs(248, 64) = %v", err)
	}
}
