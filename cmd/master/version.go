package main

import (
	"fmt"

	"github.com/prefork/prefork/pkg/version"
	"github.com/urfave/cli/v2"
)

// versionCommand prints this binary's version, not a running master's
// (that is in `master status`): one line, "master VERSION (GOVERSION)",
// whose second word is the version.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:         "version",
		Usage:        `print this binary's version: "master VERSION (GOVERSION)"`,
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("version: takes no arguments", exitBadInput)
			}
			_, err := fmt.Fprintf(c.App.Writer, "master %s (%s)\n", version.String(), version.GoVersion())
			return err
		},
	}
}
