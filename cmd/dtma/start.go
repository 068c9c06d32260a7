package main

import (
	"context"
	"fmt"
	"io"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// actionOptions are the inputs of start, stop and restart.
type actionOptions struct {
	client *dtmahttp.Client
	out    io.Writer
	errw   io.Writer
	refs   []string
}

func newStartCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "start REF [REF...]",
		Short: "Start instances",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			return runStart(cmd.Context(), actionOptions{client: c, out: s.out, errw: s.err, refs: args})
		},
	}
	addClientFlags(cmd)
	return cmd
}

// runStart starts each ref and prints it; one already running is a success.
func runStart(ctx context.Context, o actionOptions) error {
	return eachRef(o, func(ref string) (dtmahttp.ActionResult, error) { return o.client.Start(ctx, ref) })
}

// eachRef runs act on every ref, printing the ref on success (and the
// agent's message on stderr when nothing changed) and "ref: error" on
// stderr on failure. It carries on past failures, like the Docker CLI, and
// returns an error when any ref failed.
func eachRef(o actionOptions, act func(ref string) (dtmahttp.ActionResult, error)) error {
	failed := 0
	var last error
	for _, ref := range o.refs {
		res, err := act(ref)
		if err != nil {
			failed++
			last = err
			if len(o.refs) > 1 {
				fmt.Fprintf(o.errw, "dtma: %s: %s\n", ref, cliMessage(err))
			}
			continue
		}
		if !res.Changed && res.Message != "" {
			fmt.Fprintf(o.errw, "%s: %s\n", ref, res.Message)
		}
		fmt.Fprintln(o.out, ref)
	}
	switch {
	case failed == 1 && len(o.refs) == 1:
		return fmt.Errorf("%s: %w", o.refs[0], last)
	case failed > 0:
		return fmt.Errorf("%d of %d instances failed", failed, len(o.refs))
	}
	return nil
}
