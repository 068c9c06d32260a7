// Package postgres implements dtma.Registry on PostgreSQL (13 or newer), for
// fleets of agents sharing one database. Each agent reads and writes only the
// rows of its own host id; dtma.InstanceFilter.AllHosts reads every host's.
//
// The table is dtma_container_registry, with the platform's columns
// (id, account_tool_instance_id, container_name, docker_image_url,
// container_id, dtma_status, docker_status, port_bindings, created_at,
// updated_at) plus DTMA's own (host_id, name, ports, spec, ...). The schema
// is created and upgraded by embedded, additive migrations applied at Open
// under an advisory lock, so agents may start at the same time.
//
// Env values are stored (in the spec column) so that containers can be
// recreated; they never appear in errors.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentopia/dtma"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for zero Options fields.
const (
	DefaultMaxConns         = 8
	DefaultConnectTimeout   = 5 * time.Second
	DefaultStatementTimeout = 5 * time.Second
)

// Options tune the connection pool. Zero fields take the defaults above.
type Options struct {
	// MaxConns bounds the pool size.
	MaxConns int32
	// ConnectTimeout bounds establishing one connection (dial, TLS, auth).
	ConnectTimeout time.Duration
	// StatementTimeout bounds one statement on the server (PostgreSQL's
	// statement_timeout). A whole registry call, waiting for a connection
	// included, is bounded by ConnectTimeout+StatementTimeout.
	StatementTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = DefaultStatementTimeout
	}
	return o
}

// Registry is a dtma.Registry on a PostgreSQL connection pool. It is safe
// for concurrent use.
type Registry struct {
	pool   *pgxpool.Pool
	hostID string
	opts   Options
	closed atomic.Bool
}

var _ dtma.Registry = (*Registry)(nil)

// Open connects to the database dsn (a postgres:// URL or key=value string,
// as libpq), applies pending migrations and returns a registry for hostID.
// EINVALID when hostID is empty or dsn cannot be parsed; EUNAVAILABLE when
// the server cannot be reached within opts.ConnectTimeout+StatementTimeout
// (or ctx ends first); EINTERNAL when a migration fails.
func Open(ctx context.Context, dsn, hostID string, opts Options) (*Registry, error) {
	if hostID == "" {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "host_id", "is required")
	}
	opts = opts.withDefaults()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the DSN, which may hold a password.
		return nil, dtma.Errorf(dtma.EINVALID, "invalid PostgreSQL DSN")
	}
	cfg.MaxConns = opts.MaxConns
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(opts.StatementTimeout.Milliseconds(), 10)
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "dtma"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, dtma.Errorf(dtma.EINVALID, "invalid PostgreSQL configuration")
	}
	r := &Registry{pool: pool, hostID: hostID, opts: opts}
	if err := r.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool, opts); err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

// HostID returns the host whose rows this registry reads and writes.
func (r *Registry) HostID() string { return r.hostID }

// Ping checks that the database answers. EUNAVAILABLE when it does not.
func (r *Registry) Ping(ctx context.Context) error {
	return r.do(ctx, "ping", func(ctx context.Context) error { return r.pool.Ping(ctx) })
}

// Close closes the pool, waiting for calls in progress. Later calls fail
// with EUNAVAILABLE. Closing twice is harmless.
func (r *Registry) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.pool.Close()
	}
	return nil
}

// do runs fn with the call's deadline and maps its error: it returns nil,
// a *dtma.Error fn made, or one mapped from a driver error (see dbError).
// fn runs again (at most maxAttempts in all) when an attempt failed
// without running the statement: nothing was sent, or the server had
// terminated the session (stale pooled connections after a server
// restart, which are then all dropped).
func (r *Registry) do(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if r.closed.Load() {
		return dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable: closed")
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.ConnectTimeout+r.opts.StatementTimeout)
	defer cancel()
	err := fn(ctx)
	for attempt := 1; attempt < maxAttempts && err != nil && ctx.Err() == nil; attempt++ {
		if serverGone(err) {
			// Every pooled connection predates the server's shutdown:
			// drop them all rather than meet them one by one.
			r.pool.Reset()
		} else if !pgconn.SafeToRetry(err) {
			break
		}
		err = fn(ctx)
	}
	if err == nil {
		return nil
	}
	var de *dtma.Error
	if errors.As(err, &de) {
		return err
	}
	if r.closed.Load() {
		return dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable: closed")
	}
	return dbError(op, err)
}

// maxAttempts bounds how often do runs a call that failed without running.
const maxAttempts = 3

// serverGone reports whether err is the server terminating the session
// (shutdown or crash of the server, or of the backend) before or instead of
// running the statement: the statement did not commit.
func serverGone(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02": // admin_shutdown, crash_shutdown
			return true
		}
	}
	return false
}

// dbError maps a driver error to a *dtma.Error: EUNAVAILABLE when the
// database cannot be reached or did not answer in time, EINVALID for data
// the column types reject, EINTERNAL otherwise. Unique violations are
// mapped by the callers, which know the values involved. The message never
// quotes statement parameters.
func dbError(op string, err error) error {
	if reason := unavailable(err); reason != "" {
		return &dtma.Error{Code: dtma.EUNAVAILABLE, Message: "registry unavailable: " + reason, Err: fmt.Errorf("%s: %w", op, err)}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "22001": // string_data_right_truncation
			return &dtma.Error{Code: dtma.EINVALID, Field: pgErr.ColumnName, Message: "value too long", Err: fmt.Errorf("%s: %w", op, err)}
		case "22P02", "22007", "22008", "22003": // invalid text, datetime, overflow
			return &dtma.Error{Code: dtma.EINVALID, Field: pgErr.ColumnName, Message: "value rejected by the registry", Err: fmt.Errorf("%s: %w", op, err)}
		}
	}
	return &dtma.Error{Code: dtma.EINTERNAL, Message: "registry error", Err: fmt.Errorf("%s: %w", op, err)}
}

// unavailable returns a short reason when err means the database cannot be
// used right now (unreachable, shutting down, overloaded, too slow), or "".
func unavailable(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "57P01", pgErr.Code == "57P02":
			return "database server shut down"
		case pgErr.Code == "57P03":
			return "database server not accepting connections"
		case pgErr.Code == "57014":
			return "statement timed out"
		case pgErr.Code == "53300":
			return "too many connections"
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08":
			return "connection failure"
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "53":
			return "database server out of resources"
		}
		return ""
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "call canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &connectErr):
		return "cannot connect"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, pgconn.ErrConnClosed),
		errors.As(err, &netErr):
		return "connection lost"
	}
	return ""
}
