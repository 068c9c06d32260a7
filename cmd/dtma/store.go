package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/postgres"
	"github.com/agentopia/dtma/sqlite"
)

// openRegistry opens the registry the configuration selects: PostgreSQL
// for a postgres:// URL, SQLite for sqlite:///path or, by default, for
// <data dir>/dtma.db. A corrupt SQLite file is moved aside (and said so at
// error level) and a fresh registry opened; the reconciler then rebuilds
// the rows from Docker's labels.
//
// With retryUnavailable (serve), an unreachable PostgreSQL is waited for;
// the registry commands fail at once instead.
func openRegistry(ctx context.Context, c *config, hostID string, log *slog.Logger, retryUnavailable bool) (dtma.Registry, string, error) {
	u := c.RegistryURL
	switch {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		opts := postgres.Options{
			MaxConns:         c.RegistryMaxConn,
			ConnectTimeout:   c.RegistryConnTO,
			StatementTimeout: c.RegistryStmtTO,
		}
		// An agent started while PostgreSQL is down waits for it (with
		// backoff) instead of exiting; other errors are final.
		wait := time.Second
		for {
			reg, err := postgres.Open(ctx, u, hostID, opts)
			if err == nil {
				return reg, "postgres", nil
			}
			if !retryUnavailable || dtma.ErrorCode(err) != dtma.EUNAVAILABLE || ctx.Err() != nil {
				return nil, "", fmt.Errorf("open postgres registry: %w", err)
			}
			log.Warn("postgres registry unavailable; retrying", "in", wait.String(), "err", err)
			select {
			case <-ctx.Done():
				return nil, "", fmt.Errorf("open postgres registry: %w", ctx.Err())
			case <-time.After(wait):
			}
			wait = min(wait*2, 30*time.Second)
		}
	case u == "" || strings.HasPrefix(u, "sqlite://"):
		path := strings.TrimPrefix(u, "sqlite://")
		if path == "" {
			path = filepath.Join(c.DataDir, "dtma.db")
		}
		reg, moved, err := sqlite.OpenRecover(ctx, path, hostID, log)
		if err != nil {
			return nil, "", fmt.Errorf("open sqlite registry %s: %w", path, err)
		}
		if moved != "" {
			log.Error("registry file was corrupt; moved aside, rebuilding from Docker", "path", path, "moved_to", moved)
		}
		return reg, "sqlite:" + path, nil
	}
	return nil, "", fmt.Errorf("--registry-url: must start with postgres://, postgresql:// or sqlite://")
}
