package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Backup writes a consistent snapshot of the whole database file (every
// host's rows) to dest with VACUUM INTO, while other connections and
// processes keep reading and writing. dest is written next to itself under
// a temporary name and renamed into place, mode 0600; an existing dest is
// replaced. Errors are wrapped with dest; EUNAVAILABLE once closed.
func (r *Registry) Backup(ctx context.Context, dest string) error {
	if err := r.check(); err != nil {
		return err
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("backup to %s: %w", dest, err)
	}
	if abs == r.path {
		return fmt.Errorf("backup to %s: that is the registry itself", dest)
	}
	tmp := abs + ".tmp"
	_ = os.Remove(tmp)
	// VACUUM INTO takes the file name as an SQL string literal.
	lit := "'" + strings.ReplaceAll(tmp, "'", "''") + "'"
	if _, err := r.w.ExecContext(ctx, "VACUUM INTO "+lit); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup to %s: %w", dest, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup to %s: %w", dest, err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup to %s: %w", dest, err)
	}
	return nil
}

// IsDatabaseFile reports whether the file at path starts with SQLite's
// header (a backup written by Backup, or a registry file).
func IsDatabaseFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 16)
	n, _ := f.Read(head)
	return n == 16 && string(head) == "SQLite format 3\x00", nil
}
