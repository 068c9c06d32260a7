package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newRootCommand(out, errw io.Writer, getenv func(string) string) *cobra.Command {
	s := &streams{out: out, err: errw, getenv: getenv}
	root := &cobra.Command{
		Use:           "dtma",
		Short:         "Docker Tool Management Agent: deploys and watches tool containers",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetOut(out)
	root.SetErr(errw)
	root.AddCommand(
		newServeCommand(s),
		newLsCommand(s),
		newFleetCommand(s),
		newMigrateCommand(s),
		newRegistryCommand(s),
		newVersionCommand(s),
	)
	return root
}

func newVersionCommand(s *streams) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := io.WriteString(s.out, version+"\n")
			return err
		},
	}
}
