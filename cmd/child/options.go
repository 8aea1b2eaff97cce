package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// envHangAfter is -hang-after's variable. The master passes one argv to
// every child, so a test that wants one behaviour everywhere finds the
// environment as convenient as the flag.
const envHangAfter = "CHILD_HANG_AFTER"

// options are the reference child's settings; the zero value is the
// default: no hang.
type options struct {
	// hangAfter, when positive, is how long after Ready the child
	// simulates a deadlock (see hang).
	hangAfter time.Duration
}

// lookupFunc is os.LookupEnv, or a map in tests.
type lookupFunc func(name string) (string, bool)

// newFlagSet defines the flags into o. It prints nothing: parse errors
// are returned, so main reports them in one line.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&o.hangAfter, "hang-after", o.hangAfter,
		"simulate a deadlock this long after ready: requests and the watchdog check block, so pings stop (env "+envHangAfter+"; default off)")
	return fs
}

// parseOptions reads the environment, then args, which win. -h and -help
// return an error wrapping flag.ErrHelp.
func parseOptions(args []string, lookup lookupFunc) (options, error) {
	var o options
	if s, ok := lookup(envHangAfter); ok && s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return options{}, fmt.Errorf("parse %s: %w", envHangAfter, err)
		}
		o.hangAfter = d
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
	return o, nil
}

// printUsage writes the flags' help to w.
func printUsage(w io.Writer) {
	fs := newFlagSet(&options{})
	fs.SetOutput(w)
	fmt.Fprintln(w, "usage: child [-hang-after DURATION]")
	fs.PrintDefaults()
}
