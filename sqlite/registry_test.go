package sqlite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/sqlite"
)

// opener returns an open function for registrytest: one database file per
// test (or benchmark), shared by every registry opened with that test.
func opener[T testing.TB]() func(tb T, hostID string) dtma.Registry {
	var mu sync.Mutex
	paths := map[testing.TB]string{}
	return func(tb T, hostID string) dtma.Registry {
		tb.Helper()
		mu.Lock()
		path, ok := paths[tb]
		if !ok {
			path = filepath.Join(tb.TempDir(), "data", "registry.db")
			paths[tb] = path
		}
		mu.Unlock()
		r, err := sqlite.Open(context.Background(), path, hostID)
		if err != nil {
			tb.Fatalf("Open(%s): %v", path, err)
		}
		tb.Cleanup(func() { r.Close() })
		return r
	}
}

func TestRegistry(t *testing.T) {
	registrytest.Run(t, opener[*testing.T]())
}

func BenchmarkRegistry(b *testing.B) {
	registrytest.Bench(b, opener[*testing.B]())
}

func mustOpen(t *testing.T, path, host string) *sqlite.Registry {
	t.Helper()
	r, err := sqlite.Open(context.Background(), path, host)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// rawDB opens the file directly, bypassing the registry.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "registry.db")
	r := mustOpen(t, path, "h")
	if err := r.CreateInstance(context.Background(), registrytest.NewInstance("perm")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", p, got, want)
		}
	}
	var mode string
	if err := rawDB(t, path).QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// Every connection's page cache is bounded to half a megabyte: the agent
// serves reads from memory, so SQLite's default 2 MB per connection would
// only hold pages already decoded.
func TestPageCacheBounded(t *testing.T) {
	t.Parallel()
	r, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, rd, err := r.CacheSizes()
	if err != nil || w != -512 || rd != -512 {
		t.Errorf("cache_size: writer %d, reader %d (%v); want -512 (KiB) on both", w, rd, err)
	}
}

func TestOpenNarrowsPermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, path, "h")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
}

func TestOpenEmptyHostInvalid(t *testing.T) {
	t.Parallel()
	_, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "r.db"), "")
	if dtma.ErrorCode(err) != dtma.EINVALID {
		t.Errorf("Open with an empty host id: %v, want code %s", err, dtma.EINVALID)
	}
}

func TestOpenUnopenableUnavailable(t *testing.T) {
	t.Parallel()
	// The path is a directory: SQLite cannot open it.
	dir := t.TempDir()
	_, err := sqlite.Open(context.Background(), dir, "h")
	if dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Errorf("Open(directory): %v, want code %s", err, dtma.EUNAVAILABLE)
	}
	if sqlite.IsCorrupt(err) {
		t.Errorf("IsCorrupt(%v) = true for a directory", err)
	}
	// The parent is a file.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = sqlite.Open(context.Background(), filepath.Join(file, "r.db"), "h")
	if dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Errorf("Open under a file: %v, want code %s", err, dtma.EUNAVAILABLE)
	}
}

func TestMigrationsRecordedAndReopenIsNoop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r := mustOpen(t, path, "h")
	if sqlite.SchemaVersion() < 1 {
		t.Fatalf("SchemaVersion() = %d", sqlite.SchemaVersion())
	}
	type rec struct {
		version   int
		name      string
		appliedAt int64
	}
	read := func() []rec {
		rows, err := rawDB(t, path).Query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []rec
		for rows.Next() {
			var x rec
			if err := rows.Scan(&x.version, &x.name, &x.appliedAt); err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}
	first := read()
	if len(first) != sqlite.SchemaVersion() || first[0].version != 1 || first[0].name != "0001_init.sql" {
		t.Fatalf("schema_migrations = %+v, want versions 1..%d starting with 0001_init.sql", first, sqlite.SchemaVersion())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		r2 := mustOpen(t, path, "h")
		if err := r2.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		r2.Close()
	}
	again := read()
	if len(again) != len(first) {
		t.Fatalf("re-open changed schema_migrations: %+v, then %+v", first, again)
	}
	for i := range first {
		if first[i] != again[i] {
			t.Errorf("re-open changed migration record %+v to %+v", first[i], again[i])
		}
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "registry.db")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			r, err := sqlite.Open(context.Background(), path, "h")
			if err == nil {
				r.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open #%d: %v", i, err)
		}
	}
	var count int
	if err := rawDB(t, path).QueryRow("SELECT count(*) FROM schema_migrations").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != sqlite.SchemaVersion() {
		t.Errorf("schema_migrations holds %d rows, want %d", count, sqlite.SchemaVersion())
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "registry.db")
	mustOpen(t, path, "h").Close()
	if _, err := rawDB(t, path).Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(context.Background(), path, "h")
	if err == nil {
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if dtma.ErrorCode(err) != dtma.EUNAVAILABLE || sqlite.IsCorrupt(err) {
		t.Errorf("Open: %v (corrupt %v), want code %s and not corrupt", err, sqlite.IsCorrupt(err), dtma.EUNAVAILABLE)
	}
	if msg := err.Error(); !strings.Contains(msg, "9999") || !strings.Contains(msg, "newer") {
		t.Errorf("error %q does not say the schema version 9999 is newer", msg)
	}
	// Both versions and the rollback step are named.
	known := fmt.Sprintf("(%d)", sqlite.SchemaVersion())
	if msg := err.Error(); !strings.Contains(msg, known) || !strings.Contains(msg, "dtma restore") || !strings.Contains(msg, "backup taken before the upgrade") {
		t.Errorf("error %q does not name this binary's schema version %s and the rollback step", msg, known)
	}
	// OpenRecover does not throw a newer database away.
	_, moved, err := sqlite.OpenRecover(context.Background(), path, "h", slog.New(slog.DiscardHandler))
	if err == nil || moved != "" {
		t.Errorf("OpenRecover of a newer schema = moved %q, %v; want an error and nothing moved", moved, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is gone: %v", err)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r := mustOpen(t, path, "h")
	inst := registrytest.NewInstance("durable")
	inst.Spec.Env["KEY"] = "välue=with=equals"
	inst.SpecHash = inst.Spec.Hash()
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	o := dtma.Observed{DockerStatus: dtma.DockerRunning, ContainerID: "abc", RestartCount: 3}
	if _, err := r.UpdateObserved(ctx, inst.ID, o); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := mustOpen(t, path, "h")
	got, err := r2.FindInstanceByID(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != inst.Name || got.Spec.Env["KEY"] != "välue=with=equals" || got.Observed != o || !got.CreatedAt.Equal(inst.CreatedAt) {
		t.Errorf("after reopen got name %q env KEY intact %v observed %+v created %v", got.Name, got.Spec.Env["KEY"] == "välue=with=equals", got.Observed, got.CreatedAt)
	}
}

func TestColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r := mustOpen(t, path, "h")
	inst := registrytest.NewInstance("columns")
	inst.AccountToolInstanceID = ""
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	var (
		account          sql.NullString
		image, bindings  string
		started          sql.NullInt64
		created, updated int64
	)
	err := rawDB(t, path).QueryRow(`SELECT account_tool_instance_id, docker_image_url, port_bindings, started_at, created_at, updated_at
		FROM dtma_container_registry WHERE id = ?`, inst.ID).Scan(&account, &image, &bindings, &started, &created, &updated)
	if err != nil {
		t.Fatal(err)
	}
	if account.Valid {
		t.Errorf("account_tool_instance_id = %q, want NULL", account.String)
	}
	if image != inst.Spec.Image {
		t.Errorf("docker_image_url = %q, want %q", image, inst.Spec.Image)
	}
	if want := `{"53/udp":[{"HostIp":"127.0.0.1","HostPort":"30053"}],"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"30080"}]}`; bindings != want {
		t.Errorf("port_bindings = %s, want %s", bindings, want)
	}
	if started.Valid {
		t.Errorf("started_at = %d, want NULL for a zero time", started.Int64)
	}
	if created != inst.CreatedAt.UnixMicro() || updated != inst.UpdatedAt.UnixMicro() {
		t.Errorf("created_at, updated_at = %d, %d; want %d, %d (unix µs)", created, updated,
			inst.CreatedAt.UnixMicro(), inst.UpdatedAt.UnixMicro())
	}
}

func TestConflictMessageNamesField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := mustOpen(t, filepath.Join(t.TempDir(), "registry.db"), "host-1")
	a := registrytest.NewInstance("Taken Name")
	if err := r.CreateInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		field, want string
		mutate      func(*dtma.Instance)
	}{
		{"name", `name: "Taken Name" is already used on host host-1`, func(i *dtma.Instance) { i.Name = a.Name }},
		{"account_tool_instance_id", `account_tool_instance_id: "` + a.AccountToolInstanceID + `" is already used on host host-1`,
			func(i *dtma.Instance) { i.AccountToolInstanceID = a.AccountToolInstanceID }},
		{"container_name", `container_name: "dtma-taken-name" is already used on host host-1`,
			func(i *dtma.Instance) { i.ContainerName = a.ContainerName }},
		{"id", `id: "` + a.ID + `" already exists`, func(i *dtma.Instance) { i.ID = a.ID }},
	} {
		b := registrytest.NewInstance("other")
		tt.mutate(b)
		err := r.CreateInstance(ctx, b)
		if dtma.ErrorField(err) != tt.field || dtma.ErrorMessage(err) != tt.want {
			t.Errorf("conflict on %s: field %q message %q, want %q", tt.field, dtma.ErrorField(err), dtma.ErrorMessage(err), tt.want)
		}
		if b.ID != "" && tt.field != "id" {
			t.Errorf("a failed create set the id to %q", b.ID)
		}
	}
}

func TestGarbageFileCorrupt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	garbage := make([]byte, 64<<10)
	rand.Read(garbage)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(ctx, path, "h")
	if !sqlite.IsCorrupt(err) || dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("Open(garbage) = %v; want IsCorrupt and code %s", err, dtma.EUNAVAILABLE)
	}
	assertRecovers(t, path, garbage)
}

func TestDamagedDatabaseCorrupt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, data := filledDatabase(t)
	// Keep the header page, overwrite the b-tree pages with noise.
	const page = 4096
	if len(data) < 4*page {
		t.Fatalf("database is only %d bytes", len(data))
	}
	rand.Read(data[page:])
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(ctx, path, "h")
	if !sqlite.IsCorrupt(err) {
		t.Fatalf("Open(damaged) = %v; want IsCorrupt", err)
	}
	assertRecovers(t, path, data)
}

func TestTruncatedDatabaseCorrupt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, data := filledDatabase(t)
	data = data[:len(data)/2]
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(ctx, path, "h")
	if !sqlite.IsCorrupt(err) {
		t.Fatalf("Open(truncated) = %v; want IsCorrupt", err)
	}
	assertRecovers(t, path, data)
}

// filledDatabase writes a closed registry of 50 rows padded to span many
// pages into a temp dir and returns its path and bytes.
func filledDatabase(t *testing.T) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r := mustOpen(t, path, "h")
	for i := 0; i < 50; i++ {
		inst := registrytest.NewInstance("row-" + strings.Repeat("x", i))
		inst.Spec.Env["PAD"] = strings.Repeat("p", 2000)
		if err := r.CreateInstance(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// assertRecovers checks that OpenRecover moves the bad file at path (holding
// content) aside and opens a working, empty registry.
func assertRecovers(t *testing.T, path string, content []byte) {
	t.Helper()
	ctx := context.Background()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	r, moved, err := sqlite.OpenRecover(ctx, path, "h", log)
	if err != nil {
		t.Fatalf("OpenRecover: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	dir := filepath.Dir(path)
	if filepath.Dir(moved) != dir || !strings.HasPrefix(filepath.Base(moved), "registry.db.corrupt-") {
		t.Errorf("moved aside to %q, want %s/registry.db.corrupt-<timestamp>", moved, dir)
	}
	stamp := strings.TrimPrefix(filepath.Base(moved), "registry.db.corrupt-")
	if len(stamp) != len("20060102T150405Z") || stamp[8] != 'T' || !strings.HasSuffix(stamp, "Z") {
		t.Errorf("timestamp %q is not YYYYMMDDTHHMMSSZ", stamp)
	}
	got, err := os.ReadFile(moved)
	if err != nil {
		t.Fatalf("reading the moved file: %v", err)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("the moved file holds %d bytes that differ from the bad file's %d", len(got), len(content))
	}
	if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), moved) {
		t.Errorf("log %q has no error naming %s", logged.String(), moved)
	}
	rows, err := r.FindInstances(ctx, dtma.InstanceFilter{AllHosts: true})
	if err != nil || len(rows) != 0 {
		t.Fatalf("recovered registry: %d rows, %v; want empty", len(rows), err)
	}
	inst := registrytest.NewInstance("after-recovery")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance after recovery: %v", err)
	}
	if _, err := r.FindInstanceByID(ctx, inst.ID); err != nil {
		t.Fatalf("FindInstanceByID after recovery: %v", err)
	}

	// A healthy database is left where it is.
	r.Close()
	r2, moved2, err := sqlite.OpenRecover(ctx, path, "h", log)
	if err != nil || moved2 != "" {
		t.Fatalf("OpenRecover(healthy) = moved %q, %v", moved2, err)
	}
	defer r2.Close()
	if _, err := r2.FindInstanceByID(ctx, inst.ID); err != nil {
		t.Errorf("the recovered database lost its row: %v", err)
	}
}

func TestZeroLengthFileIsEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, moved, err := sqlite.OpenRecover(ctx, path, "h", slog.New(slog.DiscardHandler))
	if err != nil || moved != "" {
		t.Fatalf("OpenRecover(zero-length) = moved %q, %v; want a registry and nothing moved", moved, err)
	}
	defer r.Close()
	inst := registrytest.NewInstance("fresh")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
}

func TestClosedRegistryUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := mustOpen(t, filepath.Join(t.TempDir(), "registry.db"), "h")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Ping(ctx); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Errorf("Ping after Close: %v, want code %s", err, dtma.EUNAVAILABLE)
	}
}

func TestOpenPathWithURICharacters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dir with space?&#%41", "reg?istry#1%2F.db")
	r := mustOpen(t, path, "h")
	inst := registrytest.NewInstance("odd-path")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() == 0 {
		t.Fatalf("the database is not at %q: %v", path, err)
	}
	if _, err := mustOpen(t, path, "h").FindInstanceByID(ctx, inst.ID); err != nil {
		t.Errorf("reopen: %v", err)
	}
}
