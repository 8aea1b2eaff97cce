package supervisor

import (
	"strings"
	"testing"
)

// --metrics on the --listen port made every child crash-loop on "address
// already in use"; Validate refuses it with one line.
func TestValidateMetricsApartFromListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, listen, metrics string
		collide               bool
	}{
		{name: "equal", listen: "127.0.0.1:8080", metrics: "127.0.0.1:8080", collide: true},
		{name: "listen on all interfaces", listen: ":8080", metrics: "127.0.0.1:8080", collide: true},
		{name: "metrics on all interfaces", listen: "127.0.0.1:8080", metrics: "0.0.0.0:8080", collide: true},
		{name: "ipv6 wildcard", listen: "[::]:8080", metrics: "[::1]:8080", collide: true},
		{name: "localhost", listen: "localhost:8080", metrics: "127.0.0.1:8080", collide: true},
		{name: "other port", listen: "127.0.0.1:8080", metrics: "127.0.0.1:9090"},
		{name: "other host", listen: "127.0.0.1:8080", metrics: "127.0.0.2:8080"},
		{name: "localhost and a public address", listen: "localhost:8080", metrics: "192.0.2.1:8080"},
		{name: "metrics off", listen: "127.0.0.1:8080", metrics: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			c.Listen, c.Metrics = tcpListen(tt.listen), tt.metrics
			err := c.Validate()
			if tt.collide {
				if err == nil || !strings.HasPrefix(err.Error(), "metrics: ") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("Validate() = %v, want one line starting with \"metrics: \"", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
		})
	}
}
