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
			return listInstances(cmd, s, "/v1/instances", o, instanceColumns)
		},
	}
	addClientFlags(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

// listInstances asks the running agent for the instances at path and
// prints them.
func listInstances(cmd *cobra.Command, s *streams, path string, o outputOptions, cols []column) error {
	c, err := newAPIClient(cmd, s)
	if err != nil {
		return err
	}
	var body struct {
		Instances []instanceRow `json:"instances"`
	}
	if err := c.do(cmd.Context(), "GET", path, nil, &body); err != nil {
		return err
	}
	return writeInstances(s.out, o, body.Instances, cols)
}
