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
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			var body struct {
				Instances []instanceRow `json:"instances"`
			}
			if err := c.do(cmd.Context(), "GET", "/v1/instances", nil, &body); err != nil {
				return err
			}
			return writeInstances(s.out, o, body.Instances, instanceColumns)
		},
	}
	addClientFlags(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}
