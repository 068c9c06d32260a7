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
		newDeployCommand(s),
		newInspectCommand(s),
		newStartCommand(s),
		newStopCommand(s),
		newRestartCommand(s),
		newRmCommand(s),
		newLogsCommand(s),
		newBackupCommand(s),
		newRestoreCommand(s),
		newDoctorCommand(s),
		newHealthcheckCommand(s),
	)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	return root
}
