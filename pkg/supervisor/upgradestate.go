package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
)

// The state a master hands to the binary it execs in its place (an
// upgrade, upgrade.go): everything the new master needs to go on where
// the old one stopped, as JSON in a sealed memfd. Descriptors travel by
// number: the exec keeps them, their close-on-exec flag cleared for it.

// upgradeFormatText is the format of the state this binary writes and the
// newest it reads. It is a string only so that a test can link a binary
// of an older format (-ldflags -X); production builds never set it.
var upgradeFormatText = "2"

// minUpgradeFormat is the oldest format this binary reads.
const minUpgradeFormat = 1

// upgradeFormat returns upgradeFormatText as a number.
func upgradeFormat() int {
	n, err := strconv.Atoi(upgradeFormatText)
	if err != nil {
		return 0
	}
	return n
}

// UpgradeFormat is the format of the state this binary writes and the
// newest it reads, for `master version`.
func UpgradeFormat() int { return upgradeFormat() }

// upgradeState is the whole of what is handed on.
type upgradeState struct {
	Format  int    `json:"format"`
	Version string `json:"version"` // the old master's
	Binary  string `json:"binary"`  // the new one's path, as asked
	At      time.Time
	// Upgrades counts the upgrades in place since the master started,
	// this one included.
	Upgrades int

	Generation int              // the serving generation
	Gens       []generationFile // every generation a child or slot belongs to
	Slots      []slotFile       // the serving generation's
	Children   []childFile

	Sockets []socketFile // master socket mode's listeners
	Control int          // the admin API's listener; -1: none
	Metrics int          // the metrics endpoint's listener; -1: none
	Notify  int          // the notify socket
	// NotifyAddr is its NOTIFY_SOCKET value, which the children have.
	NotifyAddr string
	// Guard is the listener of the children's seccomp filter, which the
	// new master's threads inherit; -1: none.
	Guard int
	// NNP says the spawner set no_new_privs for the guard.
	NNP bool
	// CgroupToken and Cgroups are the children's cgroups.
	CgroupToken string
	CgroupsMade int
	Cgroups     map[int]string
	Outputs     []outputFile // the children's output pipes (--child-output prefix)

	Announced bool   // READY=1 was sent to systemd
	SteerOff  string // why steering is off; "" when on
	Tally     tallyFile
}

type generationFile struct {
	Number int
	Config Config
	Argv   []string
	// ID is who its children run as, resolved once by the master that
	// started it: the new master looks up no user (a name service that
	// fails at that instant must not end the service).
	ID *identityFile
}

// identityFile is an identity in the state.
type identityFile struct {
	Name, User, Home string
	UID, GID         uint32
	Groups           []uint32
	BindCap          bool
}

// fileOfIdentity and identityOfFile copy an identity (nil: the master's
// own) in and out of the state.
func fileOfIdentity(id *identity) *identityFile {
	if id == nil {
		return nil
	}
	return &identityFile{Name: id.name, User: id.user, Home: id.home, UID: id.uid, GID: id.gid, Groups: id.groups,
		BindCap: id.bindCap}
}

func identityOfFile(f *identityFile) *identity {
	if f == nil {
		return nil
	}
	return &identity{name: f.Name, user: f.User, home: f.Home, uid: f.UID, gid: f.GID, groups: f.Groups, bindCap: f.BindCap}
}

type slotFile struct {
	Failures        int
	LastExit        string
	RetryAt         time.Time
	Note            string
	NoRecycleBefore time.Time
}

type childFile struct {
	PID         int
	Generation  int
	Slot        int
	Life        life
	Started     time.Time
	ReadyAt     time.Time
	DrainAt     time.Time
	LastPing    time.Time
	Page        int // the counter page's memfd; -1: none
	AcceptsSeen uint64
	CountsSeen  []uint64 `json:",omitempty"`
	AcceptLimit uint64
	SeenWaiting bool
}

type socketFile struct {
	Addr string
	Slot int
	FD   int
}

// tallyFile is tally with keys JSON can carry.
type tallyFile struct {
	Restarts    map[int]int
	Accepted    map[int]uint64
	Connections map[int]uint64
	Rescued     map[int]uint64
	Unplaced    uint64
	SlotsEver   int
	// Reloads counts every reload by result, as a master before the
	// rolling strategy did, and ReloadsRolling the rolling ones among
	// them: an older master reads the totals, and its state has no
	// rolling ones.
	Reloads        map[string]uint64
	ReloadsRolling map[string]uint64 `json:",omitempty"`
	DrainKilled    uint64            `json:",omitempty"`
	ReloadCount    uint64
	ReloadSum      float64
	ReloadBuckets  []bucketFile
	WatchdogKills  map[int]uint64
	Recycles       []recycleFile
	Upgrades       map[string]uint64
	NotifyDropped  uint64
	Refused        []metrics.Refusal
	LogDropped     uint64
	// Counted holds the gone children's per-listener counts; a state of
	// format 1 has none (its Accepted are the one listener's).
	Counted []countFile `json:",omitempty"`
}

type countFile struct {
	Slot          int
	Name, Network string
	Count         uint64
}

type bucketFile struct {
	Le    float64
	Count uint64
}

type recycleFile struct {
	Slot   int
	Reason string
	Count  uint64
}

// encodeState returns st as the bytes of the memfd.
func encodeState(st *upgradeState) ([]byte, error) {
	return json.Marshal(st)
}

// errUpgradeFormat is returned for a state this binary cannot read.
var errUpgradeFormat = errors.New("state format")

// decodeState reads the state, refusing a format this binary does not
// read.
func decodeState(data []byte) (*upgradeState, error) {
	var head struct {
		Format  int    `json:"format"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("read the state: %w", err)
	}
	if head.Format > upgradeFormat() || head.Format < minUpgradeFormat {
		return nil, fmt.Errorf("%w %d of master %s: this binary reads formats %d to %d", errUpgradeFormat,
			head.Format, head.Version, minUpgradeFormat, upgradeFormat())
	}
	var st upgradeState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("read the state: %w", err)
	}
	return &st, nil
}

// fileOfTally copies t into the state.
func fileOfTally(t *tally) tallyFile {
	f := tallyFile{
		Restarts: maps.Clone(t.restarts), Accepted: maps.Clone(t.accepted), Connections: maps.Clone(t.connections),
		Rescued: maps.Clone(t.rescued), Unplaced: t.unplaced, SlotsEver: t.slotsEver,
		Reloads: make(map[string]uint64), ReloadsRolling: make(map[string]uint64), DrainKilled: t.drainKilled,
		ReloadCount: t.reloadHist.Count, ReloadSum: t.reloadHist.Sum, WatchdogKills: maps.Clone(t.watchdogKills),
		Upgrades: maps.Clone(t.upgrades), NotifyDropped: t.notifyDropped, Refused: slices.Clone(t.refused),
	}
	for k, n := range t.reloads {
		f.Reloads[k.Result] += n
		if k.Strategy == StrategyRolling {
			f.ReloadsRolling[k.Result] = n
		}
	}
	for le, n := range t.reloadHist.Buckets {
		f.ReloadBuckets = append(f.ReloadBuckets, bucketFile{Le: le, Count: n})
	}
	for k, n := range t.recycles {
		f.Recycles = append(f.Recycles, recycleFile{Slot: k.slot, Reason: k.reason, Count: n})
	}
	for k, n := range t.counted {
		f.Counted = append(f.Counted, countFile{Slot: k.slot, Name: k.name, Network: k.network, Count: n})
	}
	return f
}

// tallyOfFile is fileOfTally undone; maps missing from the file are empty.
func tallyOfFile(f tallyFile) tally {
	t := tally{
		restarts: orEmpty(f.Restarts), accepted: orEmpty(f.Accepted), connections: orEmpty(f.Connections),
		rescued: orEmpty(f.Rescued), unplaced: f.Unplaced, slotsEver: f.SlotsEver, reloads: make(map[metrics.ReloadKey]uint64),
		drainKilled: f.DrainKilled, watchdogKills: orEmpty(f.WatchdogKills), recycles: make(map[recycleKey]uint64), upgrades: orEmpty(f.Upgrades),
		notifyDropped: f.NotifyDropped, refused: f.Refused,
	}
	for result, n := range f.Reloads {
		rolling := min(f.ReloadsRolling[result], n)
		if n > rolling {
			t.reloads[reloadKey(result, StrategyGeneration)] = n - rolling
		}
		if rolling > 0 {
			t.reloads[reloadKey(result, StrategyRolling)] = rolling
		}
	}
	t.reloadHist.Count, t.reloadHist.Sum = f.ReloadCount, f.ReloadSum
	if len(f.ReloadBuckets) > 0 {
		t.reloadHist.Buckets = make(map[float64]uint64, len(f.ReloadBuckets))
		for _, b := range f.ReloadBuckets {
			t.reloadHist.Buckets[b.Le] = b.Count
		}
	}
	for _, r := range f.Recycles {
		t.recycles[recycleKey{slot: r.Slot, reason: r.Reason}] = r.Count
	}
	t.counted = make(map[countKey]uint64, len(f.Counted))
	for _, c := range f.Counted {
		t.counted[countKey{slot: c.Slot, name: c.Name, network: c.Network}] = c.Count
	}
	if f.Counted == nil {
		// Format 1: one listener, which Listeners.UnmarshalJSON names.
		for slot, n := range f.Accepted {
			t.counted[countKey{slot: slot, name: DefaultListenerName, network: NetTCP}] = n
		}
	}
	return t
}

// orEmpty returns m, or an empty map for nil.
func orEmpty[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return make(map[K]V)
	}
	return m
}
