// Package sqlite implements dtma.Registry on an SQLite database file, using
// the pure-Go driver modernc.org/sqlite (database/sql driver name "sqlite").
//
// The database holds each instance's requested spec, env values included, so
// the file is as secret as those values: Open creates it 0600 and its parent
// directory 0700 (the agent's data dir should be 0700), and SQLite gives the
// -wal and -shm files the database file's permissions.
//
// Commits are durable (journal_mode=WAL, synchronous=FULL). Every write is
// one atomic statement (transactions, as for migrations, start with BEGIN
// IMMEDIATE) on a single write connection, so writers of one Registry queue
// in Go and writers of other processes wait on SQLite's busy timeout instead
// of failing; reads use a pool of read-only connections and run concurrently
// with writes.
//
// Times are stored as INTEGER unix microseconds in UTC (NULL for a zero
// started_at/finished_at) and read back as UTC time.Time values at
// microsecond precision.
//
// The schema is versioned: migrations/NNNN_name.sql files, embedded in the
// binary, are applied at open in one transaction and recorded in the
// schema_migrations table. A database whose recorded version is newer than
// the binary knows is refused.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentopia/dtma"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// BusyTimeout is how long a statement waits for another process's write
// lock before it fails with EUNAVAILABLE.
const BusyTimeout = 10 * time.Second

// cacheKiB is each connection's page cache, in KiB (SQLite's default is
// 2000). The agent serves reads from memory and reads the whole registry
// only at start-up, so a larger cache would only hold pages it has already
// decoded; 1000 rows take about 0.5 MB of database pages.
const cacheKiB = 512

// readerIdle is how long an idle read connection is kept: reads come in
// bursts (start-up, a rebuild, the CLI), and a closed connection gives its
// page cache back.
const readerIdle = time.Minute

// Compile-time check that Registry implements dtma.Registry.
var _ dtma.Registry = (*Registry)(nil)

// Registry is a dtma.Registry stored in one SQLite file. It is safe for
// concurrent use. Several Registries (of one or more processes, for the same
// or different hosts) may open the same file.
type Registry struct {
	path   string
	hostID string
	w      *sql.DB // one connection, BEGIN IMMEDIATE: all writes
	r      *sql.DB // read-only pool
	closed atomic.Bool
}

// Open opens (creating when missing) the registry database at path for the
// host hostID, applies pending migrations and checks the file's integrity
// with PRAGMA quick_check. Errors are *dtma.Error: EINVALID for an empty
// host id or path; EUNAVAILABLE when the file cannot be opened, is corrupt
// (IsCorrupt reports true; see OpenRecover) or has a schema version newer
// than this binary knows.
func Open(ctx context.Context, path, hostID string) (*Registry, error) {
	if hostID == "" {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "host_id", "must not be empty")
	}
	if path == "" {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "path", "must not be empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, unavailable(fmt.Sprintf("registry path %s", path), err)
	}
	if err := createFile(abs); err != nil {
		return nil, unavailable("create registry database "+abs, err)
	}
	// Switching a fresh file to WAL takes an exclusive lock, and SQLite
	// answers SQLITE_BUSY at once (without its busy handler) when another
	// connection opens the same file at that moment; retry within
	// BusyTimeout.
	deadline := time.Now().Add(BusyTimeout)
	for {
		r := &Registry{path: abs, hostID: hostID}
		err := r.open(ctx)
		if err == nil {
			return r, nil
		}
		r.closeDBs()
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// createFile creates abs's parent directory (0700) and the file (0600) when
// missing, and narrows an existing file's permissions to 0600.
func createFile(abs string) error {
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", abs)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return f.Chmod(0o600)
	}
	return nil
}

func dsn(abs string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(BusyTimeout.Milliseconds(), 10))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	q.Set("_pragma", "cache_size(-"+strconv.Itoa(cacheKiB)+")")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	return u.String()
}

func (r *Registry) open(ctx context.Context) error {
	var err error
	if r.w, err = sql.Open("sqlite", dsn(r.path, false)); err != nil {
		return unavailable("open registry database "+r.path, err)
	}
	r.w.SetMaxOpenConns(1)
	r.w.SetMaxIdleConns(1)
	r.w.SetConnMaxLifetime(0)
	r.w.SetConnMaxIdleTime(0)
	if err := r.w.PingContext(ctx); err != nil {
		return r.openError(err)
	}
	if err := r.quickCheck(ctx); err != nil {
		return err
	}
	if err := r.migrate(ctx); err != nil {
		return err
	}
	if r.r, err = sql.Open("sqlite", dsn(r.path, true)); err != nil {
		return unavailable("open registry database "+r.path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.r.SetMaxOpenConns(n)
	r.r.SetMaxIdleConns(n)
	r.r.SetConnMaxLifetime(0)
	r.r.SetConnMaxIdleTime(readerIdle)
	if err := r.r.PingContext(ctx); err != nil {
		return r.openError(err)
	}
	return nil
}

// openError classifies an error met while opening the database.
func (r *Registry) openError(err error) error {
	if IsCorrupt(err) {
		var ce *corruptError
		if !errors.As(err, &ce) {
			err = &corruptError{path: r.path, err: err}
		}
		return &dtma.Error{
			Code:    dtma.EUNAVAILABLE,
			Message: "registry database " + r.path + " is corrupt",
			Err:     err,
		}
	}
	return unavailable("open registry database "+r.path, err)
}

func (r *Registry) quickCheck(ctx context.Context) error {
	rows, err := r.w.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return r.openError(err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return r.openError(err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		return r.openError(err)
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
		}
		return r.openError(&corruptError{path: r.path, detail: "quick_check: " + strings.Join(problems, "; ")})
	}
	return nil
}

// migration is one embedded schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(migrationFS, "migrations/"+name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the pending migrations in one IMMEDIATE transaction, so
// concurrent openers of one file apply each migration once.
func (r *Registry) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return &dtma.Error{Code: dtma.EINTERNAL, Message: "embedded registry migrations are invalid", Err: err}
	}
	known := ms[len(ms)-1].version
	tx, err := r.w.BeginTx(ctx, nil)
	if err != nil {
		return r.openError(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return r.openError(fmt.Errorf("create schema_migrations: %w", err))
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return r.openError(fmt.Errorf("read schema version: %w", err))
	}
	if current > known {
		return &dtma.Error{
			Code: dtma.EUNAVAILABLE,
			Message: fmt.Sprintf("registry database %s has schema version %d, newer than this dtma knows (%d): "+
				"a newer dtma wrote it; run that version, or roll back: stop the agent, `dtma restore` the backup taken before the upgrade, then start this version",
				r.path, current, known),
		}
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return r.openError(fmt.Errorf("apply migration %s: %w", m.name, err))
		}
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.version, m.name, time.Now().UnixMicro()); err != nil {
			return r.openError(fmt.Errorf("record migration %s: %w", m.name, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return r.openError(fmt.Errorf("commit migrations: %w", err))
	}
	return nil
}

// OpenRecover is Open that survives a corrupt database file: when Open fails
// with an error for which IsCorrupt is true, it renames the file (and its
// -wal, -shm and -journal files) to "<path>.corrupt-<YYYYMMDDTHHMMSSZ>" (UTC;
// a numeric suffix is added if that name is taken), logs at error level and
// opens a fresh, empty registry at path. movedAside is the new path of the
// bad file, or "" when nothing was moved. The caller is expected to rebuild
// the rows (from Docker's labels). Any other error is returned as from Open.
// A nil log logs to slog.Default().
func OpenRecover(ctx context.Context, path, hostID string, log *slog.Logger) (r *Registry, movedAside string, err error) {
	r, err = Open(ctx, path, hostID)
	if err == nil || !IsCorrupt(err) {
		return r, "", err
	}
	if log == nil {
		log = slog.Default()
	}
	abs, aerr := filepath.Abs(path)
	if aerr != nil {
		return nil, "", unavailable("registry path "+path, aerr)
	}
	dest, merr := moveAside(abs, time.Now())
	if merr != nil {
		return nil, "", unavailable("move corrupt registry database "+abs+" aside", errors.Join(err, merr))
	}
	log.ErrorContext(ctx, "registry database is corrupt: moved it aside and starting with an empty registry; instances will be rebuilt from Docker",
		"path", abs, "moved_to", dest, "err", err)
	r, err = Open(ctx, abs, hostID)
	if err != nil {
		return nil, dest, err
	}
	return r, dest, nil
}

// moveAside renames abs and its companion files to a free
// abs.corrupt-<timestamp> name and returns that name.
func moveAside(abs string, now time.Time) (string, error) {
	base := abs + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	dest := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(dest); errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			return "", err
		}
		dest = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(abs, dest); err != nil {
		return "", err
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Rename(abs+suffix, dest+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return dest, err
		}
	}
	return dest, nil
}

// corruptError marks a database file as damaged or not a database.
type corruptError struct {
	path   string
	detail string
	err    error
}

func (e *corruptError) Error() string {
	switch {
	case e.err != nil && e.detail != "":
		return fmt.Sprintf("registry database %s is corrupt: %s: %v", e.path, e.detail, e.err)
	case e.err != nil:
		return fmt.Sprintf("registry database %s is corrupt: %v", e.path, e.err)
	}
	return fmt.Sprintf("registry database %s is corrupt: %s", e.path, e.detail)
}

func (e *corruptError) Unwrap() error { return e.err }

// IsCorrupt reports whether err says that the database file is damaged or
// is not an SQLite database at all (SQLITE_CORRUPT, SQLITE_NOTADB, or a
// failed quick_check). OpenRecover moves such a file aside.
func IsCorrupt(err error) bool {
	var ce *corruptError
	if errors.As(err, &ce) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return true
		}
	}
	return false
}

// HostID returns the host whose rows this registry reads and writes.
func (r *Registry) HostID() string { return r.hostID }

// Path returns the absolute path of the database file.
func (r *Registry) Path() string { return r.path }

// Ping checks that the database answers; EUNAVAILABLE when it does not.
func (r *Registry) Ping(ctx context.Context) error {
	if err := r.check(); err != nil {
		return err
	}
	var one int
	if err := r.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return unavailable("ping registry database", err)
	}
	return nil
}

// Close closes the database. Later calls of any method fail with
// EUNAVAILABLE; closing twice is not an error.
func (r *Registry) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if err := r.closeDBs(); err != nil {
		return fmt.Errorf("close registry database %s: %w", r.path, err)
	}
	return nil
}

func (r *Registry) closeDBs() error {
	var errs []error
	if r.r != nil {
		errs = append(errs, r.r.Close())
	}
	if r.w != nil {
		errs = append(errs, r.w.Close())
	}
	return errors.Join(errs...)
}

// check fails with EUNAVAILABLE once the registry is closed.
func (r *Registry) check() error {
	if r.closed.Load() {
		return dtma.Errorf(dtma.EUNAVAILABLE, "registry database is closed")
	}
	return nil
}

func unavailable(what string, err error) *dtma.Error {
	return &dtma.Error{Code: dtma.EUNAVAILABLE, Message: what + " failed", Err: err}
}
