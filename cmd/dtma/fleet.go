package main

import (
	"github.com/spf13/cobra"
)

func newFleetCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Work with every host sharing the registry",
	}
	cmd.AddCommand(newFleetLsCommand(s))
	return cmd
}

func newFleetLsCommand(s *streams) *cobra.Command {
	var o outputOptions
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the instances of every host with their host id (asks the running agent)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cols := append([]column{{"HOST", func(r instanceRow) string { return r.HostID }}}, instanceColumns...)
			return listInstances(cmd, s, true, o, cols)
		},
	}
	addClientFlags(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}
