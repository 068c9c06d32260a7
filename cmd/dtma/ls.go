package main

import (
	"github.com/spf13/cobra"
)

func newLsCommand(s *streams) *cobra.Command {
	var o outputOptions
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"ps", "list"},
		Short:   "List this host's instances (asks the running agent)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return listInstances(cmd, s, false, o, instanceColumns)
		},
	}
	addClientFlags(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

// listInstances asks the running agent for this host's instances, or
// every host's with fleet, and prints them.
func listInstances(cmd *cobra.Command, s *streams, fleet bool, o outputOptions, cols []column) error {
	c, err := newAPIClient(cmd, s)
	if err != nil {
		return err
	}
	list := c.Instances
	if fleet {
		list = c.FleetInstances
	}
	insts, err := list(cmd.Context())
	if err != nil {
		return err
	}
	return writeInstances(s.out, o, rowsOf(insts), cols)
}
