package supervisor

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/prefork/prefork/pkg/metrics"
)

// Every total behind a metric goes through the state unchanged.
func TestTallyRoundTrip(t *testing.T) {
	t.Parallel()
	in := tally{
		restarts: map[int]int{0: 3, 5: 1}, accepted: map[int]uint64{1: 1 << 40}, connections: map[int]uint64{2: 7},
		rescued: map[int]uint64{3: 9}, unplaced: 11, slotsEver: 6, reloads: map[metrics.ReloadKey]uint64{{Result: "success", Strategy: StrategyGeneration}: 4, {Result: "success", Strategy: StrategyRolling}: 2,
			{Result: "rolled_back", Strategy: StrategyRolling}: 1},
		drainKilled:   3,
		watchdogKills: map[int]uint64{1: 2}, recycles: map[recycleKey]uint64{{slot: 1, reason: "accepts"}: 5},
		upgrades: map[string]uint64{"success": 2, "rejected": 1}, notifyDropped: 13,
		refused: []metrics.Refusal{{Endpoint: "control", Reason: metrics.RefusedPeer, Count: 2}},
		counted: map[countKey]uint64{{slot: 1, name: "http", network: NetTCP}: 1 << 40, {slot: 1, name: "dns", network: NetUDP}: 7},
	}
	in.reloadHist.Observe(0.25)
	in.reloadHist.Observe(3)
	st := &upgradeState{Format: upgradeFormat(), Tally: fileOfTally(&in)}
	data, err := encodeState(st)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	out := tallyOfFile(back.Tally)
	if !reflect.DeepEqual(in, out) {
		t.Errorf("tally after the state:\n%+v\nwant\n%+v", out, in)
	}
}

func TestDecodeStateRefusesOtherFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		data string
		ok   bool
	}{
		{`{"format":1,"version":"v1"}`, true},
		{`{"format":2,"version":"v2"}`, true},
		{`{"format":3,"version":"v3"}`, false},
		{`{"format":0,"version":"v0"}`, false},
		{`{"version":"v0"}`, false},
		{`not json`, false},
		{``, false},
	} {
		_, err := decodeState([]byte(tc.data))
		if (err == nil) != tc.ok {
			t.Errorf("decodeState(%q) = %v, want ok %v", tc.data, err, tc.ok)
		}
		if tc.ok || err == nil {
			continue
		}
		if strings.HasPrefix(tc.data, "{") && !errors.Is(err, errUpgradeFormat) {
			t.Errorf("decodeState(%q) = %v, want the format named", tc.data, err)
		}
	}
}

// A state from anywhere never panics the new master: it is read or
// refused.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"format":1,"version":"v1","Generation":1,"Gens":[{"Number":1}],"Children":[{"PID":5,"Page":-1}]}`))
	f.Add([]byte(`{"format":1,"Tally":{"Recycles":[{"Slot":-1}],"ReloadBuckets":[{"Le":1e308}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		_ = tallyOfFile(st.Tally)
		_ = st.descriptors()
	})
}

// A master before named listeners kept one count per slot: the new one
// gives it to the one listener its state names, "default".
func TestTallyFromFormat1(t *testing.T) {
	t.Parallel()
	out := tallyOfFile(tallyFile{Accepted: map[int]uint64{0: 5, 2: 9}})
	want := map[countKey]uint64{{slot: 0, name: DefaultListenerName, network: NetTCP}: 5, {slot: 2, name: DefaultListenerName, network: NetTCP}: 9}
	if !reflect.DeepEqual(out.counted, want) {
		t.Errorf("counted = %v, want %v", out.counted, want)
	}
}
