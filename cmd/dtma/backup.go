package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/agentopia/dtma"
	"github.com/spf13/cobra"
)

// backupOptions are `dtma backup`'s inputs.
type backupOptions struct {
	reg   dtma.Registry
	where string // the registry, for the message
	file  string
	errw  io.Writer
}

// fileBackuper is a registry that can snapshot its whole file (SQLite).
type fileBackuper interface {
	Backup(ctx context.Context, dest string) error
}

func newBackupCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent snapshot of the registry to FILE (while the agent serves)",
		Long: `Write a consistent snapshot of the registry that the same settings as
` + "`serve`" + ` select to FILE (mode 0600), while the agent keeps serving.

SQLite: a copy of the whole database file (VACUUM INTO), every host's rows.
PostgreSQL: this host's rows as a registry export (JSON; other hosts' rows
are theirs to back up). Backups hold env values: keep them as secret as the
registry itself. Restore with ` + "`dtma restore FILE`" + `.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd, s)
			if err != nil {
				return err
			}
			hostID, err := resolveHostID(c)
			if err != nil {
				return err
			}
			reg, where, err := openRegistry(cmd.Context(), c, hostID, newLogger(c, s), false)
			if err != nil {
				return err
			}
			defer reg.Close()
			return runBackup(cmd.Context(), backupOptions{reg: reg, where: where, file: args[0], errw: s.err})
		},
	}
	addSettings(cmd.Flags(), registrySettings...)
	return cmd
}

// runBackup snapshots o.reg into o.file: the database file when the
// registry can copy itself, else an export of this host's rows written to
// a temporary file and renamed into place.
func runBackup(ctx context.Context, o backupOptions) error {
	if b, ok := o.reg.(fileBackuper); ok {
		if err := b.Backup(ctx, o.file); err != nil {
			return err
		}
		fmt.Fprintf(o.errw, "backed up %s to %s\n", o.where, o.file)
		return nil
	}
	rows, err := o.reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil {
		return fmt.Errorf("read registry: %w", err)
	}
	f := exportFile{Format: exportFormat, HostID: o.reg.HostID(), ExportedAt: time.Now().UTC(), Instances: []exportInstance{}}
	for _, r := range rows {
		f.Instances = append(f.Instances, toExport(r))
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode backup: %w", err)
	}
	tmp := o.file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	if err := os.Rename(tmp, o.file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write backup: %w", err)
	}
	fmt.Fprintf(o.errw, "backed up %d instances of host %s from %s to %s\n", len(f.Instances), f.HostID, o.where, o.file)
	return nil
}
