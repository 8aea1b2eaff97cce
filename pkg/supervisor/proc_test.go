package supervisor

import (
	"os"
	"testing"
)

func TestParseStatmRSS(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{in: "4950 1203 780 1 0 2131 0\n", want: 1203 * 4096},
		{in: "10 0 0 0 0 0 0", want: 0},
		{in: "4950", wantErr: true},
		{in: "4950 x 1", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseStatmRSS([]byte(tt.in), 4096)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseStatmRSS(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// The test process itself holds megabytes, and a pid that is gone is an
// error, not a zero.
func TestResidentBytes(t *testing.T) {
	rss, err := residentBytes(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("residentBytes(self) = %d, %v; want at least 1 MiB", rss, err)
	}
	if _, err := residentBytes(1 << 30); err == nil {
		t.Error("residentBytes of a pid that cannot exist: no error")
	}
}

func TestAcceptLimit(t *testing.T) {
	if acceptLimit(0) != 0 {
		t.Error("acceptLimit(0) is not 0: recycling would be on")
	}
	seen := map[uint64]bool{}
	for range 1000 {
		n := acceptLimit(300)
		if n < 300 || n > 330 {
			t.Fatalf("acceptLimit(300) = %d, want 300..330", n)
		}
		seen[n] = true
	}
	if len(seen) < 10 {
		t.Errorf("acceptLimit(300) took %d values in 1000 draws; the jitter is missing", len(seen))
	}
}
