package main

import (
	"context"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// stopOptions are `dtma stop`'s inputs; timeout < 0 means the agent's
// default (DTMA_STOP_TIMEOUT).
type stopOptions struct {
	actionOptions
	timeout time.Duration
}

func newStopCommand(s *streams) *cobra.Command {
	var secs int
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] REF [REF...]",
		Short: "Stop instances (graceful stop, then kill)",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			o := stopOptions{actionOptions{client: c, out: s.out, errw: s.err, refs: args}, -1}
			if cmd.Flags().Changed("time") {
				if secs < 0 {
					return usageError(errInvalidTime)
				}
				o.timeout = time.Duration(secs) * time.Second
			}
			return runStop(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVarP(&secs, "time", "t", 0, "seconds to wait for a graceful stop before killing (default: the agent's)")
	addClientFlags(cmd)
	return cmd
}

// runStop stops each ref and prints it; one already stopped is a success.
func runStop(ctx context.Context, o stopOptions) error {
	return eachRef(o.actionOptions, func(ref string) (dtmahttp.ActionResult, error) { return o.client.Stop(ctx, ref, o.timeout) })
}
