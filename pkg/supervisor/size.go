package supervisor

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes ParseSize knows, longest first so that "MiB"
// is not read as "B". K, M, G and T are binary, as systemd and nginx read
// them; KB, MB, GB and TB are decimal.
var sizeUnits = []struct {
	suffix string
	factor uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseSize reads a byte count such as 536870912, 512MiB, 512M, 1.5GiB or
// 500MB: a number, optionally with a fraction, and an optional unit.
func ParseSize(s string) (uint64, error) {
	num, factor := strings.TrimSpace(s), uint64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	if n, err := strconv.ParseUint(num, 10, 64); err == nil {
		if n > math.MaxUint64/factor {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return n * factor, nil
	}
	whole, frac, _ := strings.Cut(num, ".")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || !digits(whole) || !digits(frac) || whole+frac == "" {
		return 0, fmt.Errorf("%q is not a size such as 512MiB, 2G or 1073741824", s)
	}
	v := f * float64(factor)
	if v >= math.MaxUint64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return uint64(v), nil
}

// digits reports whether s holds decimal digits only (or nothing).
func digits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}
