package pgtest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { pgtest.Main(m, &pg) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestSharedServer(t *testing.T) {
	t.Parallel()
	s := pg.Server(t)
	if s != pg.Server(t) {
		t.Fatal("Shared.Server returned two different servers")
	}
	conn := connect(t, s.DSN("postgres"))
	var version, listen, fsync string
	ctx := context.Background()
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(version, "15.") {
		t.Errorf("server_version = %q, want 15.x", version)
	}
	if err := conn.QueryRow(ctx, "SHOW listen_addresses").Scan(&listen); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, want 127.0.0.1", listen)
	}
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if fsync != "off" {
		t.Errorf("fsync = %q, want off", fsync)
	}
	var uuid string
	if err := conn.QueryRow(ctx, "SELECT gen_random_uuid()::text").Scan(&uuid); err != nil || len(uuid) != 36 {
		t.Errorf("gen_random_uuid() = %q, %v", uuid, err)
	}
}

func TestCreateDatabaseIsolated(t *testing.T) {
	t.Parallel()
	s := pg.Server(t)
	name := "Test/With Odd-Chars/" + strings.Repeat("x", 80)
	dsn1 := s.CreateDatabase(t, name)
	dsn2 := s.CreateDatabase(t, name)
	if dsn1 == dsn2 {
		t.Fatalf("two CreateDatabase calls with one name gave the same DSN %s", dsn1)
	}
	ctx := context.Background()
	c1, c2 := connect(t, dsn1), connect(t, dsn2)
	if _, err := c1.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Exec(ctx, "SELECT * FROM t"); err == nil {
		t.Fatal("table created in one database is visible in the other")
	}
	var db string
	if err := c1.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if len(db) > 63 || !strings.HasPrefix(db, "test_with_odd_chars_") {
		t.Errorf("database name %q: want a sanitized prefix and at most 63 bytes", db)
	}
}

func TestStopRestartClose(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	dsn := s.CreateDatabase(t, t.Name())
	ctx := context.Background()
	c := connect(t, dsn)
	if _, err := c.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	port := s.Port()

	s.Stop(t)
	if s.Running() {
		t.Fatal("Running() after Stop")
	}
	var pgErr *pgconn.PgError
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("query on a stopped server succeeded")
	} else if errors.As(err, &pgErr) && pgErr.Code != "57P01" {
		t.Errorf("query after fast shutdown: %v, want SQLSTATE 57P01 or a network error", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := pgx.Connect(cctx, dsn); err == nil {
		t.Fatal("connect to a stopped server succeeded")
	}

	s.Restart(t)
	if s.Port() != port {
		t.Fatalf("port changed across restart: %d -> %d", port, s.Port())
	}
	var x int
	if err := connect(t, dsn).QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after restart: x=%d err=%v, want 42", x, err)
	}

	dir := s.Dir()
	s.Close()
	s.Close() // idempotent
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory %s still exists after Close (stat: %v)", dir, err)
	}
	if _, err := pgx.Connect(cctx, dsn); err == nil {
		t.Error("connect after Close succeeded")
	}
}
