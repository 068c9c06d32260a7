package postgres

import (
	"context"
	"embed"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles holds the schema migrations, named NNNN_description.sql.
// They are additive: an applied file is never edited, changes come as new
// files.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_xact_lock key serializing migrations
// of every DTMA agent sharing a database ("dtma_mig" in ASCII).
const migrationLockKey int64 = 0x64746d615f6d6967

// migrationTimeout bounds applying the migrations, waiting for another
// agent's migration included.
const migrationTimeout = 2 * time.Minute

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		b, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the migrations not yet recorded in dtma_schema_migrations,
// in one transaction holding an advisory lock, so concurrent callers apply
// each migration exactly once. EUNAVAILABLE when the database cannot be
// reached; EINTERNAL when a migration fails.
func migrate(ctx context.Context, pool *pgxpool.Pool, opts Options) error {
	ms, err := migrations()
	if err != nil {
		return &dtma.Error{Code: dtma.EINTERNAL, Message: "registry schema migrations are broken", Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout+migrationTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", migrationTimeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS dtma_schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create dtma_schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, "SELECT version FROM dtma_schema_migrations")
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		done := map[int]bool{}
		for _, v := range applied {
			done[v] = true
		}
		for _, m := range ms {
			if done[m.version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO dtma_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
		}
		return nil
	})
	if err == nil {
		return nil
	}
	if reason := unavailable(err); reason != "" {
		return &dtma.Error{Code: dtma.EUNAVAILABLE, Message: "registry unavailable: " + reason, Err: fmt.Errorf("migrate: %w", err)}
	}
	return &dtma.Error{Code: dtma.EINTERNAL, Message: "registry schema migration failed", Err: fmt.Errorf("migrate: %w", err)}
}
