package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/sqlite"
	"github.com/spf13/cobra"
)

// restoreOptions are `dtma restore`'s inputs.
type restoreOptions struct {
	cfg    *config
	hostID string
	file   string
	errw   io.Writer
	open   func(ctx context.Context) (dtma.Registry, string, error)
}

func newRestoreCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the registry with a backup (refused while an agent serves it)",
		Long: `Replace the registry that the same settings as ` + "`serve`" + ` select with
the backup in FILE (written by ` + "`dtma backup`" + `). Refused while an agent
serves that registry: ` + "`dtma serve`" + ` holds a shared lock on
<registry file>.lock (SQLite) or <data dir>/serve-<host id>.lock (PostgreSQL),
and restore takes it exclusively. Stop the agent, restore, start the agent:
its first reconcile brings registry and Docker in step again without
restarting any running tool (containers the backup does not know are
adopted from their labels; rows whose container is gone are recreated or
marked missing).

A SQLite backup replaces the whole database file; an export (JSON, e.g. a
PostgreSQL backup) replaces this host's rows.`,
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
			log := newLogger(c, s)
			return runRestore(cmd.Context(), restoreOptions{cfg: c, hostID: hostID, file: args[0], errw: s.err,
				open: func(ctx context.Context) (dtma.Registry, string, error) {
					return openRegistry(ctx, c, hostID, log, false)
				}})
		},
	}
	addSettings(cmd.Flags(), registrySettings...)
	return cmd
}

// runRestore takes the serve lock exclusively (errServing while an agent
// serves), then restores the backup: a SQLite file replaces the database
// file, an export replaces this host's rows.
func runRestore(ctx context.Context, o restoreOptions) error {
	isDB, err := sqlite.IsDatabaseFile(o.file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	lock, err := lockFile(serveLockPath(o.cfg, o.hostID), true)
	if err != nil {
		return fmt.Errorf("restore refused: %w", err)
	}
	defer lock.Close()
	if isDB {
		err = restoreFile(ctx, o)
	} else {
		err = restoreExport(ctx, o)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(o.errw, "start the agent: its first reconcile brings the registry and Docker in step (no running tool is restarted)")
	return nil
}

// restoreFile replaces the SQLite registry file with a copy of the backup,
// checked and migrated by sqlite.Open before it is renamed into place.
func restoreFile(ctx context.Context, o restoreOptions) error {
	u := o.cfg.RegistryURL
	if u != "" && !strings.HasPrefix(u, "sqlite://") {
		return fmt.Errorf("restore: %s is a SQLite backup, but the registry is %s: restore a PostgreSQL backup (an export)", o.file, u)
	}
	target := strings.TrimPrefix(u, "sqlite://")
	if target == "" {
		target = filepath.Join(o.cfg.DataDir, "dtma.db")
	}
	target, _ = filepath.Abs(target)
	tmp := target + ".restore"
	cleanup := func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(tmp + suffix)
		}
	}
	cleanup()
	if err := copyFile(o.file, tmp); err != nil {
		cleanup()
		return fmt.Errorf("restore: %w", err)
	}
	reg, err := sqlite.Open(ctx, tmp, o.hostID)
	if err != nil {
		cleanup()
		return fmt.Errorf("restore: backup %s: %w", o.file, err)
	}
	n, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	reg.Close()
	if err != nil {
		cleanup()
		return fmt.Errorf("restore: backup %s: %w", o.file, err)
	}
	// The old file's WAL must not be replayed onto the restored file.
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(target + suffix); err != nil && !os.IsNotExist(err) {
			cleanup()
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		cleanup()
		return fmt.Errorf("restore: %w", err)
	}
	cleanup()
	fmt.Fprintf(o.errw, "restored %s from %s (%d instances of host %s)\n", target, o.file, len(n), o.hostID)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// restoreExport replaces this host's rows with the export's. The export
// must be of this host.
func restoreExport(ctx context.Context, o restoreOptions) error {
	data, err := os.ReadFile(o.file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var f exportFile
	if err := json.Unmarshal(data, &f); err != nil || f.Format != exportFormat {
		return fmt.Errorf("restore: %s is neither a SQLite backup nor a %s export", o.file, exportFormat)
	}
	if f.HostID != o.hostID {
		return fmt.Errorf("restore: %s is a backup of host %s, this is host %s (set DTMA_HOST_ID=%s to restore it as that host)", o.file, f.HostID, o.hostID, f.HostID)
	}
	for _, e := range f.Instances {
		if why := invalidRow(e); why != "" {
			return fmt.Errorf("restore: %s: row %s: %s; nothing changed", o.file, e.ID, why)
		}
	}
	reg, where, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer reg.Close()
	old, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil {
		return fmt.Errorf("restore: read registry: %w", err)
	}
	for _, inst := range old {
		if err := reg.DeleteInstance(ctx, inst.ID); err != nil {
			return fmt.Errorf("restore: delete row %s: %w", inst.ID, err)
		}
	}
	for _, e := range f.Instances {
		if err := reg.CreateInstance(ctx, fromExport(e)); err != nil {
			return fmt.Errorf("restore: row %s (%s): %w", e.ID, e.Name, err)
		}
	}
	fmt.Fprintf(o.errw, "restored %d instances of host %s into %s from %s (%d rows replaced)\n", len(f.Instances), o.hostID, where, o.file, len(old))
	return nil
}
