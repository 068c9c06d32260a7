package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/postgres"
	"github.com/agentopia/dtma/sqlite"
)

// openRegistry opens the registry the configuration selects: PostgreSQL
// for a postgres:// URL, SQLite for sqlite:///path or, by default, for
// <data dir>/dtma.db. A corrupt SQLite file is moved aside (and said so at
// error level) and a fresh registry opened; the reconciler then rebuilds
// the rows from Docker's labels.
func openRegistry(ctx context.Context, c *config, hostID string, log *slog.Logger) (dtma.Registry, string, error) {
	u := c.RegistryURL
	switch {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		reg, err := postgres.Open(ctx, u, hostID, postgres.Options{
			MaxConns:         c.RegistryMaxConn,
			ConnectTimeout:   c.RegistryConnTO,
			StatementTimeout: c.RegistryStmtTO,
		})
		if err != nil {
			return nil, "", fmt.Errorf("open postgres registry: %w", err)
		}
		return reg, "postgres", nil
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
