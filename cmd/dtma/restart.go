package main

import (
	"context"
	"errors"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

var errInvalidTime = errors.New("--time: must be 0 or more seconds")

func newRestartCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart REF [REF...]",
		Short: "Restart instances",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			return runRestart(cmd.Context(), actionOptions{client: c, out: s.out, errw: s.err, refs: args})
		},
	}
	addClientFlags(cmd)
	return cmd
}

// runRestart restarts each ref and prints it.
func runRestart(ctx context.Context, o actionOptions) error {
	return eachRef(o, func(ref string) (dtmahttp.ActionResult, error) { return o.client.Restart(ctx, ref) })
}
