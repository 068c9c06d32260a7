package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// serveLockPath is the file `dtma serve` holds a shared flock on while it
// serves the configured registry, and `dtma restore` an exclusive one: next
// to the SQLite file (so every agent on that file holds it, whatever its
// host id), or in the data dir for PostgreSQL (the agent of this host id).
func serveLockPath(c *config, hostID string) string {
	u := c.RegistryURL
	if u == "" || strings.HasPrefix(u, "sqlite://") {
		path := strings.TrimPrefix(u, "sqlite://")
		if path == "" {
			path = filepath.Join(c.DataDir, "dtma.db")
		}
		return path + ".lock"
	}
	return filepath.Join(c.DataDir, "serve-"+hostID+".lock")
}

// errServing is returned when an agent holds the serve lock.
var errServing = errors.New("an agent is serving this registry")

// lockFile opens path (creating it, mode 0600, and its directory, 0700)
// and takes a flock on it without waiting: shared for serve, exclusive for
// restore. It returns errServing (wrapped) when the lock is held the other
// way. The lock lasts until the returned file is closed (or the process
// ends, however it ends).
func lockFile(path string, exclusive bool) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if exclusive {
				return nil, fmt.Errorf("%w (lock %s is held): stop it first (systemctl stop dtma, or docker stop dtma_manager)", errServing, path)
			}
			return nil, fmt.Errorf("a restore of this registry is in progress (lock %s is held): start the agent when it is done", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
