// Package pgtest runs a throw-away PostgreSQL 15 server for tests.
//
// A server lives in its own temporary directory (data, unix socket, log),
// listens on 127.0.0.1 only, on a free port, with trust authentication and
// durability switched off for speed (fsync, synchronous_commit and
// full_page_writes off). Nothing is shared with any other PostgreSQL on the
// machine.
//
// initdb and postgres refuse to run as root. When the test runs as root the
// server runs as the "postgres" OS user (Debian's packages create it); when
// that user does not exist, pgtest creates it as a system user with
// `useradd --system` (documented side effect, done once per machine). When
// the test runs as another user the server runs as that user.
//
// The postmaster is started directly as a child of the test binary (not
// daemonized by pg_ctl) with a parent-death signal, so even a test binary
// killed by `go test -timeout` takes its server down with it: stopping is
// SIGINT (pg_ctl's "fast" mode), cleanup is SIGQUIT (pg_ctl's "immediate"
// mode), and the parent-death signal is SIGQUIT as well. Only the temporary
// directory (/tmp/dtma-pgtest-*) of such a killed run stays behind.
//
// When the binaries are missing or the server cannot start, Start fails the
// test with a clear message if the environment variable CI is "true", and
// skips it otherwise.
package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is where the PostgreSQL 15 binaries are looked for.
const BinDir = "/usr/lib/postgresql/15/bin"

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 60 * time.Second

// Server is one running (or stopped) PostgreSQL server. Its methods are safe
// for concurrent use.
type Server struct {
	dir     string // temporary root: data/, sock/, postgres.log
	port    int
	cred    *syscall.Credential // nil: run as the current user
	mu      sync.Mutex
	cmd     *exec.Cmd     // the running postmaster; nil when stopped
	exited  chan struct{} // closed when cmd has exited
	dbSeq   int           // suffix making CreateDatabase names unique
	removed bool
}

// Start initializes and starts a fresh server and registers a cleanup on tb
// that stops it (immediate shutdown) and removes its directory. It fails or
// skips tb (see the package doc) when PostgreSQL is unavailable.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start()
	if err != nil {
		unavailable(tb, err)
	}
	tb.Cleanup(s.Close)
	return s
}

// unavailable fails tb when CI=true and skips it otherwise.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("pgtest: PostgreSQL is required when CI=true: %v", err)
	}
	tb.Skipf("pgtest: PostgreSQL unavailable, skipping: %v", err)
}

// startAttempts is how many fresh servers start tries before giving up: a
// port picked free can be taken by another process before the postmaster
// binds it, and the next attempt picks another.
const startAttempts = 3

// start creates the directory, runs initdb and starts the server, trying
// again from scratch (new directory, new port) when an attempt fails.
func start() (*Server, error) {
	var errs []error
	for i := 0; i < startAttempts; i++ {
		s, err := startAttempt()
		if err == nil {
			return s, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", i+1, err))
		var missing *missingError
		if errors.As(err, &missing) {
			break // no point in trying again
		}
	}
	return nil, errors.Join(errs...)
}

// missingError says the PostgreSQL binaries are not installed.
type missingError struct{ err error }

func (e *missingError) Error() string { return e.err.Error() }
func (e *missingError) Unwrap() error { return e.err }

// startAttempt is one try of start. On failure it leaves nothing behind.
func startAttempt() (_ *Server, err error) {
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(BinDir, b)); err != nil {
			return nil, &missingError{fmt.Errorf("%s not found in %s: %w", b, BinDir, err)}
		}
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: its parent is 0700 root-owned, which the postgres user
	// cannot traverse. /tmp itself is world-writable and sticky.
	dir, err := os.MkdirTemp("", "dtma-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &Server{dir: dir, cred: cred}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "sock"), 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if cred != nil {
		for _, p := range []string{dir, filepath.Join(dir, "sock")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("chown %s to postgres: %w", p, err)
			}
		}
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}

	initdb := s.command("initdb", "-D", s.dataDir(), "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := strings.Join([]string{
		"",
		"# pgtest",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(s.port),
		"unix_socket_directories = '" + filepath.Join(dir, "sock") + "'",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 200",
		"shared_buffers = 32MB",
		"logging_collector = off",
		"log_min_messages = warning",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(s.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}
	if err := s.startPostmaster(); err != nil {
		return nil, err
	}
	return s, nil
}

// credential returns the identity to run PostgreSQL as: nil for a non-root
// caller, the postgres user (created when missing) for root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		out, uerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		if uerr != nil {
			return nil, fmt.Errorf("no postgres OS user and useradd failed: %w: %s", uerr, out)
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("look up postgres OS user: %w", err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// command returns a PostgreSQL binary invocation running as the server's
// user, in its directory, killed (SIGQUIT) if the test binary dies.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(BinDir, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		Setpgid:    true,            // keep terminal signals away from the server
		Pdeathsig:  syscall.SIGQUIT, // never outlive the test binary
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// startPostmaster runs postgres and waits until it accepts connections.
// s.mu must not be held.
func (s *Server) startPostmaster() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := s.command("postgres", "-D", s.dataDir())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-exited:
			s.cmd, s.exited = nil, nil
			return fmt.Errorf("postgres exited during startup (%v); log:\n%s", cmd.ProcessState, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.signalLocked(syscall.SIGQUIT)
			return fmt.Errorf("postgres not ready after %v: %w; log:\n%s", startTimeout, err, s.logTail())
		}
	}
}

// logTail returns the end of the server log, for failure messages.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// signalLocked sends sig to the postmaster and waits for it to exit. s.mu
// must be held.
func (s *Server) signalLocked(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

// Port returns the TCP port the server listens on (on 127.0.0.1). It stays
// the same across Stop and Restart.
func (s *Server) Port() int { return s.port }

// Dir returns the server's temporary directory (data/, sock/, postgres.log).
func (s *Server) Dir() string { return s.dir }

// DSN returns a connection URL for database db as the superuser postgres
// over TCP on 127.0.0.1 (no password: trust authentication).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// CreateDatabase creates a new, empty database whose name is derived from
// name (typically t.Name()) plus a unique suffix, and returns its DSN. A
// cleanup on tb drops it (forcibly, if connections remain) when the server
// is still running then.
func (s *Server) CreateDatabase(tb testing.TB, name string) string {
	tb.Helper()
	s.mu.Lock()
	s.dbSeq++
	db := dbName(name, s.dbSeq)
	s.mu.Unlock()

	if err := s.exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", db, err)
	}
	tb.Cleanup(func() {
		if !s.Running() {
			return
		}
		if err := s.exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", db, err)
		}
	})
	return s.DSN(db)
}

// exec runs one statement in the postgres database.
func (s *Server) exec(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// dbName turns name into a valid, unique database identifier of at most 63
// bytes: lower-case [a-z0-9_], a hash of the full name when it had to be
// shortened, and "_<seq>".
func dbName(name string, seq int) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	base := strings.Trim(b.String(), "_")
	suffix := "_" + strconv.Itoa(seq)
	if base == "" {
		base = "db"
	}
	if len(base)+len(suffix) > 63 {
		sum := sha256.Sum256([]byte(name))
		h := hex.EncodeToString(sum[:4])
		base = base[:63-len(suffix)-len(h)-1] + "_" + h
	}
	return base + suffix
}

// Stop shuts the server down (fast mode: sessions are terminated with
// SQLSTATE 57P01, as for an administrator's shutdown) and waits until it has
// exited. The port and data are kept for Restart. Stopping a stopped server
// does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalLocked(syscall.SIGINT)
}

// Restart starts the server again on the same port and data directory,
// stopping it first (fast mode) when it runs. It fails tb when the server
// does not come back.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	s.signalLocked(syscall.SIGINT)
	removed := s.removed
	s.mu.Unlock()
	if removed {
		tb.Fatalf("pgtest: restart of a closed server")
	}
	if err := s.startPostmaster(); err != nil {
		tb.Fatalf("pgtest: restart: %v", err)
	}
}

// Close stops the server (immediate mode) and removes its directory. It is
// idempotent; Start registers it as a cleanup.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signalLocked(syscall.SIGQUIT)
	if !s.removed {
		s.removed = true
		_ = os.RemoveAll(s.dir)
	}
}

// Shared lazily starts one server for all the tests of a package that ask
// for it, so they do not each pay for initdb. Declare one in the test
// package and stop it from TestMain:
//
//	var pg pgtest.Shared
//
//	func TestMain(m *testing.M) { pgtest.Main(m, &pg) }
//
//	func TestX(t *testing.T) { dsn := pg.Server(t).CreateDatabase(t, t.Name()) ... }
//
// Tests that stop or restart the server must use their own (Start), not the
// shared one. The zero value is ready to use.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Server returns the shared server, starting it on first use. It fails or
// skips tb like Start when PostgreSQL is unavailable.
func (sh *Shared) Server(tb testing.TB) *Server {
	tb.Helper()
	sh.once.Do(func() { sh.srv, sh.err = start() })
	if sh.err != nil {
		unavailable(tb, sh.err)
	}
	return sh.srv
}

// Close stops the shared server, if it was started, and removes its
// directory.
func (sh *Shared) Close() {
	sh.once.Do(func() { sh.err = errors.New("pgtest: shared server closed") })
	if sh.srv != nil {
		sh.srv.Close()
	}
}

// Main runs the package's tests, closes sh and exits with the tests' status.
// Call it from TestMain.
func Main(m *testing.M, sh *Shared) {
	code := m.Run()
	sh.Close()
	os.Exit(code)
}

// StartServer is Start for programs that are not tests (the bench
// command): it initializes and starts a fresh server and returns it, or
// the error; the caller must Close it.
func StartServer() (*Server, error) { return start() }

// RestartServer is Restart for programs that are not tests: a fast-mode
// stop, then a start on the same port and data directory.
func (s *Server) RestartServer() error {
	s.mu.Lock()
	s.signalLocked(syscall.SIGINT)
	removed := s.removed
	s.mu.Unlock()
	if removed {
		return errors.New("pgtest: restart of a closed server")
	}
	return s.startPostmaster()
}

// Exec runs one SQL statement in the postgres database, for programs that
// configure the server (ALTER SYSTEM ...).
func (s *Server) Exec(ctx context.Context, sql string) error { return s.exec(ctx, sql) }
