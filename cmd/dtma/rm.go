package main

import (
	"context"
	"fmt"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// rmOptions are `dtma rm`'s inputs.
type rmOptions struct {
	actionOptions
	force bool
}

func newRmCommand(s *streams) *cobra.Command {
	var o rmOptions
	cmd := &cobra.Command{
		Use:     "rm [-f] REF [REF...]",
		Aliases: []string{"remove"},
		Short:   "Remove instances: their container, then their record",
		Args:    usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			o.actionOptions = actionOptions{client: c, out: s.out, errw: s.err, refs: args}
			return runRm(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "remove a running instance too")
	addClientFlags(cmd)
	return cmd
}

// runRm removes each ref and prints it. Without force a running instance
// is refused (as docker rm does) and left alone; the agent's removal itself
// always force-removes the container.
func runRm(ctx context.Context, o rmOptions) error {
	return eachRef(o.actionOptions, func(ref string) (dtmahttp.ActionResult, error) {
		if !o.force {
			inst, err := o.client.Instance(ctx, ref)
			if err != nil {
				return dtmahttp.ActionResult{}, err
			}
			if inst.DockerStatus == "running" || inst.DockerStatus == "restarting" {
				return dtmahttp.ActionResult{}, fmt.Errorf("instance %s is running: stop it first or use rm -f", inst.Name)
			}
		}
		return dtmahttp.ActionResult{Changed: true}, o.client.Remove(ctx, ref)
	})
}
