package steer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSpareList(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		healthy []bool
		want    []uint32
	}{
		{name: "none active", n: 0, healthy: []bool{true, true}, want: nil},
		{name: "all healthy", n: 3, healthy: []bool{true, true, true, true}, want: []uint32{0, 1, 2}},
		{name: "one unhealthy", n: 4, healthy: []bool{true, true, false, true}, want: []uint32{0, 1, 3}},
		{name: "none healthy", n: 2, healthy: []bool{false, false}, want: nil},
		{name: "n beyond health", n: 5, healthy: []bool{false, true}, want: []uint32{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spareList(tt.n, tt.healthy); !slices.Equal(got, tt.want) {
				t.Errorf("spareList(%d, %v) = %v, want %v", tt.n, tt.healthy, got, tt.want)
			}
		})
	}
}

func TestReciprocalScale(t *testing.T) {
	tests := []struct {
		v, n, want uint32
	}{
		{v: 0, n: 4, want: 0},
		{v: 1<<30 - 1, n: 4, want: 0},
		{v: 1 << 30, n: 4, want: 1},
		{v: math.MaxUint32, n: 4, want: 3},
		{v: math.MaxUint32, n: 1, want: 0},
		{v: math.MaxUint32, n: MaxSlots, want: MaxSlots - 1},
	}
	for _, tt := range tests {
		if got := reciprocalScale(tt.v, tt.n); got != tt.want {
			t.Errorf("reciprocalScale(%#x, %d) = %d, want %d", tt.v, tt.n, got, tt.want)
		}
	}
}

// shares runs pick over uniformly random hashes (the flow hash is
// jhash's output) and returns the fraction each slot got, the kernel's (-1)
// last. The seed is fixed: the result is the same on every run.
func shares(n int, healthy, hasSocket []bool) []float64 {
	const samples = 1 << 16
	rng := rand.New(rand.NewPCG(1, 2))
	got := make([]float64, n+1)
	for range samples {
		s := pick(rng.Uint32(), n, healthy, hasSocket)
		if s < 0 {
			s = n
		}
		got[s] += 1.0 / samples
	}
	return got
}

func all(n int, v bool) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = v
	}
	return b
}

// The model of the program: the kernel's pick while healthy, an unhealthy
// slot's share spread evenly over the healthy ones, and the kernel when no
// slot can be chosen.
func TestPickShares(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		healthy   []bool
		hasSocket []bool
		want      []float64 // per slot, then the kernel's
	}{
		{name: "all healthy", n: 4, healthy: all(4, true), hasSocket: all(4, true), want: []float64{.25, .25, .25, .25, 0}},
		{name: "slot 2 unhealthy", n: 4, healthy: []bool{true, true, false, true}, hasSocket: all(4, true), want: []float64{1. / 3, 1. / 3, 0, 1. / 3, 0}},
		{name: "two unhealthy", n: 4, healthy: []bool{false, true, false, true}, hasSocket: all(4, true), want: []float64{0, .5, 0, .5, 0}},
		{name: "none healthy", n: 4, healthy: all(4, false), hasSocket: all(4, true), want: []float64{0, 0, 0, 0, 1}},
		{name: "three active", n: 3, healthy: all(4, true), hasSocket: all(4, true), want: []float64{1. / 3, 1. / 3, 1. / 3, 0, 0}},
		{name: "none active", n: 0, healthy: all(4, true), hasSocket: all(4, true), want: []float64{1}},
		// Slot 1 is healthy without a socket: its share is spread as an
		// unhealthy slot's, except that the spare picks landing on slot 1
		// itself go on to slot 2.
		{name: "socket missing", n: 4, healthy: all(4, true), hasSocket: []bool{true, false, true, true}, want: []float64{.3125, 0, .375, .3125, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shares(tt.n, tt.healthy, tt.hasSocket)
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 0.01 {
					t.Errorf("shares = %.3f, want %.3f", got, tt.want)
					break
				}
			}
		})
	}
}

// Past probes entries without a socket the kernel decides.
func TestPickGivesUp(t *testing.T) {
	const n = 2 * probes
	hasSocket := all(n, false)
	hasSocket[n-1] = true
	// hash 0: idx 0, pos 0; entries 0..probes-1 have no socket.
	if got := pick(0, n, all(n, true), hasSocket); got != -1 {
		t.Errorf("pick = %d, want -1 (the kernel)", got)
	}
	if got := pick(math.MaxUint32, n, all(n, true), hasSocket); got != n-1 {
		t.Errorf("pick = %d, want %d", got, n-1)
	}
}

func TestLoadRange(t *testing.T) {
	for _, n := range []int{0, -1, MaxSlots + 1} {
		if s, err := Load(n); err == nil {
			s.Close()
			t.Errorf("Load(%d) succeeded", n)
		}
	}
}
