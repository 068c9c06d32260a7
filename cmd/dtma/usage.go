package main

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"
)

// usageError marks err as a usage error: the process exits with 2.
func usageError(err error) error {
	if err == nil {
		return nil
	}
	var e *exitError
	if errors.As(err, &e) {
		return err
	}
	return &exitError{code: 2, err: err}
}

// usageArgs wraps a cobra argument check so that its failure exits with 2.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return usageError(check(cmd, args))
	}
}

// isUsage reports whether err is one of cobra's own usage errors (an
// unknown command or flag), which are not routed through usageError.
func isUsage(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.HasPrefix(msg, "flag needs an argument") ||
		strings.HasPrefix(msg, "invalid argument")
}
