package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The variables of the flags. The master passes one argv to every child,
// so a test that wants one behaviour everywhere finds the environment as
// convenient as the flag. They have no PREFORK_ prefix: the master keeps
// those to itself (it neither passes its own on nor lets a config's env
// set one).
const (
	envHangAfter  = "CHILD_HANG_AFTER"
	envCrashAfter = "CHILD_CRASH_AFTER"
	envBallast    = "CHILD_BALLAST"
)

// maxBallast bounds -ballast so a typo cannot take the host's memory.
const maxBallast = 16 << 30

// options are the reference child's settings; the zero value is the
// default: no hang, no crash, no ballast.
type options struct {
	// hangAfter, when positive, is how long after Ready the child
	// simulates a deadlock (see hang).
	hangAfter time.Duration
	// crashAfter, when positive, is how long after Ready the child exits
	// with code 1, as a build that crashes under traffic would.
	crashAfter time.Duration
	// ballast is how many bytes the child allocates and touches before
	// Ready and keeps, so that its resident size is known.
	ballast int64
}

// lookupFunc is os.LookupEnv, or a map in tests.
type lookupFunc func(name string) (string, bool)

// sizeValue is a flag.Value of a byte count (see parseSize).
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

// newFlagSet defines the flags into o. It prints nothing: parse errors
// are returned, so main reports them in one line.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&o.hangAfter, "hang-after", o.hangAfter,
		"simulate a deadlock this long after ready: requests and the watchdog check block, so pings stop (env "+envHangAfter+"; default off)")
	fs.DurationVar(&o.crashAfter, "crash-after", o.crashAfter,
		"exit with code 1 this long after ready, as a build that crashes under traffic (env "+envCrashAfter+"; default off)")
	fs.Var(sizeValue{&o.ballast}, "ballast",
		"allocate and touch this many bytes before ready and keep them, so the resident size is known: 64MiB, 512KiB, 1GiB or bytes (env "+envBallast+"; default 0)")
	return fs
}

// parseOptions reads the environment, then args, which win. -h and -help
// return an error wrapping flag.ErrHelp.
func parseOptions(args []string, lookup lookupFunc) (options, error) {
	var o options
	for _, d := range []struct {
		env string
		to  *time.Duration
	}{{envHangAfter, &o.hangAfter}, {envCrashAfter, &o.crashAfter}} {
		if s, ok := lookup(d.env); ok && s != "" {
			v, err := time.ParseDuration(s)
			if err != nil {
				return options{}, fmt.Errorf("parse %s: %w", d.env, err)
			}
			*d.to = v
		}
	}
	if s, ok := lookup(envBallast); ok && s != "" {
		n, err := parseSize(s)
		if err != nil {
			return options{}, fmt.Errorf("parse %s: %w", envBallast, err)
		}
		o.ballast = n
	}
	fs := newFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		return options{}, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("parse flags: unexpected argument %q", fs.Arg(0))
	}
	if o.hangAfter < 0 {
		return options{}, errors.New("parse flags: hang-after must not be negative")
	}
	if o.crashAfter < 0 {
		return options{}, errors.New("parse flags: crash-after must not be negative")
	}
	return o, nil
}

// units are the suffixes parseSize knows, longest first.
var units = []struct {
	suffix string
	shift  uint
}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"K", 10}, {"M", 20}, {"G", 30}, {"B", 0}}

// parseSize reads a byte count: a whole number with an optional binary
// unit (B, K or KiB, M or MiB, G or GiB), from 0 to maxBallast.
func parseSize(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > maxBallast>>shift {
		return 0, fmt.Errorf("bad size %q: want 0 to %dGiB, as 64MiB, 512KiB or a byte count", s, maxBallast>>30)
	}
	return n << shift, nil
}

// printUsage writes the flags' help to w.
func printUsage(w io.Writer) {
	fs := newFlagSet(&options{})
	fs.SetOutput(w)
	fmt.Fprintln(w, "usage: child [-hang-after DURATION] [-crash-after DURATION] [-ballast SIZE]")
	fs.PrintDefaults()
}
