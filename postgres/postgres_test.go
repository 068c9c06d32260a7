package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/agentopia/dtma/postgres"
	"github.com/agentopia/dtma/registrytest"
	"github.com/jackc/pgx/v5"
)

// secretValue is planted in env; no error message may contain it.
const secretValue = "s3cr3t-Value=with=equals"

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

func mustOpen(t *testing.T, dsn, hostID string, opts postgres.Options) *postgres.Registry {
	t.Helper()
	r, err := postgres.Open(context.Background(), dsn, hostID, opts)
	if err != nil {
		t.Fatalf("postgres.Open(%s): %v", hostID, err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func assertCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := dtma.ErrorCode(err); got != code {
		t.Errorf("%s: error %v has code %q, want %q", what, err, got, code)
	}
	if err != nil && strings.Contains(err.Error(), secretValue) {
		t.Errorf("%s: error message contains an env value: %v", what, err)
	}
}

func newInstance(name string) *dtma.Instance {
	inst := registrytest.NewInstance(name)
	inst.Spec.Env["API_KEY"] = secretValue
	inst.SpecHash = inst.Spec.Hash()
	return inst
}

func TestOpenConcurrentMigrations(t *testing.T) {
	t.Parallel()
	dsn := pg.Server(t).CreateDatabase(t, t.Name())
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	regs := make([]*postgres.Registry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			regs[i], errs[i] = postgres.Open(context.Background(), dsn, "host-a", postgres.Options{})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("concurrent Open #%d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = regs[i].Close() })
	}
	if t.Failed() {
		t.FailNow()
	}

	ctx := context.Background()
	conn := connect(t, dsn)
	applied := func() (count, distinct int, last time.Time) {
		t.Helper()
		err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT version), max(applied_at) FROM dtma_schema_migrations").
			Scan(&count, &distinct, &last)
		if err != nil {
			t.Fatalf("read dtma_schema_migrations: %v", err)
		}
		return
	}
	count, distinct, last := applied()
	if count != len(files) || distinct != len(files) {
		t.Fatalf("dtma_schema_migrations holds %d rows (%d versions), want %d (one per file)", count, distinct, len(files))
	}
	// All five registries work on the one schema.
	for i, r := range regs {
		if err := r.CreateInstance(ctx, newInstance("from-"+string(rune('a'+i)))); err != nil {
			t.Errorf("CreateInstance via registry #%d: %v", i, err)
		}
	}
	// Opening a migrated database applies nothing.
	mustOpen(t, dsn, "host-b", postgres.Options{})
	if c, d, l := applied(); c != count || d != distinct || !l.Equal(last) {
		t.Errorf("reopening changed dtma_schema_migrations: %d rows, %d versions, last %v; was %d, %d, %v", c, d, l, count, distinct, last)
	}
}

func TestOpenInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pg.Server(t)
	_, err := postgres.Open(ctx, srv.DSN("postgres"), "", postgres.Options{})
	assertCode(t, "Open without host id", err, dtma.EINVALID)

	_, err = postgres.Open(ctx, "postgres://user:hunter2@127.0.0.1:notaport/db", "h", postgres.Options{})
	assertCode(t, "Open with a malformed DSN", err, dtma.EINVALID)
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error quotes the DSN password: %v", err)
	}

	_, err = postgres.Open(ctx, srv.DSN("no_such_database"), "h", postgres.Options{})
	if code := dtma.ErrorCode(err); code == "" {
		t.Errorf("Open of a missing database succeeded")
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := postgres.Options{ConnectTimeout: 300 * time.Millisecond, StatementTimeout: 300 * time.Millisecond}

	// Nothing listens: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()
	_, err = postgres.Open(ctx, "postgres://postgres@"+closedAddr+"/x?sslmode=disable", "h", opts)
	assertCode(t, "Open on a closed port", err, dtma.EUNAVAILABLE)
	if msg := dtma.ErrorMessage(err); !strings.HasPrefix(msg, "registry unavailable") {
		t.Errorf("message %q, want it to start with \"registry unavailable\"", msg)
	}

	// Something accepts but never answers: the connect timeout ends it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	var held []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	err = within(t, func() error {
		_, err := postgres.Open(ctx, "postgres://postgres@"+silent.Addr().String()+"/x?sslmode=disable", "h", opts)
		return err
	})
	assertCode(t, "Open on a silent server", err, dtma.EUNAVAILABLE)
}

// within runs fn and returns its error, failing the test if fn has not
// returned after a minute: registry calls are bounded by their timeouts,
// so this only catches a hang (it is not a performance assertion).
func within(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("call still blocked after a minute: the timeouts do not bound it")
		return nil
	}
}

// allCalls runs every Registry method on r and returns their errors by
// name. inst must be a stored row (it is not changed by failing calls).
func allCalls(r dtma.Registry, inst *dtma.Instance) map[string]error {
	ctx := context.Background()
	errs := map[string]error{}
	errs["Ping"] = r.Ping(ctx)
	_, errs["FindInstanceByID"] = r.FindInstanceByID(ctx, inst.ID)
	_, errs["FindInstances"] = r.FindInstances(ctx, dtma.InstanceFilter{})
	_, errs["FindInstances(AllHosts)"] = r.FindInstances(ctx, dtma.InstanceFilter{AllHosts: true})
	errs["CreateInstance"] = r.CreateInstance(ctx, newInstance("during-outage"))
	upd := inst.Clone()
	errs["UpdateInstance"] = r.UpdateInstance(ctx, upd)
	_, errs["UpdateObserved"] = r.UpdateObserved(ctx, inst.ID, dtma.Observed{DockerStatus: dtma.DockerExited, ExitCode: 3})
	errs["DeleteInstance"] = r.DeleteInstance(ctx, dtma.NewUUID())
	return errs
}

func TestOutageStopRestart(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t) // its own server: this test stops it
	dsn := srv.CreateDatabase(t, t.Name())
	ctx := context.Background()
	r := mustOpen(t, dsn, "host-a", postgres.Options{ConnectTimeout: time.Second, StatementTimeout: time.Second})
	inst := newInstance("survivor")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// warm fills the pool with connections that are idle when the server
	// goes away.
	warm := func() {
		t.Helper()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := r.FindInstances(ctx, dtma.InstanceFilter{}); err != nil {
					t.Errorf("FindInstances: %v", err)
				}
			})
		}
		wg.Wait()
	}

	// A quick restart: the pool is full of connections the old server
	// terminated; the first calls after it still succeed.
	warm()
	srv.Restart(t)
	for name, err := range allCalls(r, inst) {
		if err != nil {
			t.Errorf("%s right after a restart: %v", name, err)
		}
	}
	if _, err := r.UpdateObserved(ctx, inst.ID, dtma.Observed{}); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteInstance(ctx, findByName(t, r, "during-outage").ID); err != nil {
		t.Fatal(err)
	}

	// An outage: every call fails with EUNAVAILABLE, none hangs.
	warm()
	srv.Stop(t)
	var errs map[string]error
	within(t, func() error { errs = allCalls(r, inst); return nil })
	for name, err := range errs {
		assertCode(t, name+" while PostgreSQL is down", err, dtma.EUNAVAILABLE)
		if msg := dtma.ErrorMessage(err); err != nil && !strings.HasPrefix(msg, "registry unavailable") {
			t.Errorf("%s: message %q, want it to start with \"registry unavailable\"", name, msg)
		}
	}

	srv.Restart(t)
	// The same Registry works again, without reopening, from the first call.
	for name, err := range allCalls(r, inst) {
		if err != nil {
			t.Errorf("%s after the restart: %v", name, err)
		}
	}
	got, err := r.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil || len(got) != 2 {
		t.Fatalf("after the restart FindInstances = %d rows, %v; want 2 (survivor and during-outage)", len(got), err)
	}
	if got[0].ID != inst.ID || got[0].ExitCode != 3 || got[0].DockerStatus != dtma.DockerExited {
		t.Errorf("after the restart the first row is %s exit %d docker %q, want %s exit 3 docker exited",
			got[0].ID, got[0].ExitCode, got[0].DockerStatus, inst.ID)
	}
}

func findByName(t *testing.T, r dtma.Registry, name string) *dtma.Instance {
	t.Helper()
	rows, err := r.FindInstances(context.Background(), dtma.InstanceFilter{Name: &name})
	if err != nil || len(rows) != 1 {
		t.Fatalf("FindInstances(name %q) = %d rows, %v; want 1", name, len(rows), err)
	}
	return rows[0]
}

func TestUnresponsiveServer(t *testing.T) {
	t.Parallel()
	dsn := pg.Server(t).CreateDatabase(t, t.Name())
	p := newProxy(t, pg.Server(t).Port())
	pdsn := p.dsn(t, dsn)
	ctx := context.Background()
	// The short deadlines are what this test is about (calls during the
	// pause fail fast), but on a loaded machine the first connect alone
	// can take longer than 300 ms: opening is tried again, for a minute
	// at most, while the server answers normally.
	var r *postgres.Registry
	for deadline := time.Now().Add(time.Minute); ; {
		var err error
		r, err = postgres.Open(ctx, pdsn, "host-a", postgres.Options{ConnectTimeout: 300 * time.Millisecond, StatementTimeout: 300 * time.Millisecond})
		if err == nil {
			break
		}
		if dtma.ErrorCode(err) != dtma.EUNAVAILABLE || time.Now().After(deadline) {
			t.Fatalf("postgres.Open(host-a): %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { _ = r.Close() })
	inst := newInstance("patient")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}

	p.pause()
	var errs map[string]error
	within(t, func() error { errs = allCalls(r, inst); return nil })
	for name, err := range errs {
		assertCode(t, name+" while PostgreSQL does not answer", err, dtma.EUNAVAILABLE)
	}

	p.resume()
	// Connections the timeouts broke are replaced: the registry recovers by
	// itself. A single call may still miss its 300 ms connect deadline on a
	// busy machine, so the condition is waited for with a generous cap; a
	// pool that kept its broken connections would never answer again.
	var pingErr error
	recovered := waitUntil(time.Minute, func() bool {
		pingErr = r.Ping(ctx)
		return pingErr == nil
	})
	if !recovered {
		t.Fatalf("Ping after the server answers again: still failing after a minute: %v", pingErr)
	}
	var got *dtma.Instance
	var err error
	if !waitUntil(time.Minute, func() bool {
		got, err = r.FindInstanceByID(ctx, inst.ID)
		return err == nil
	}) || got.Name != inst.Name {
		t.Fatalf("FindInstanceByID after the server answers again = %v, %v", got, err)
	}
}

// waitUntil calls cond until it reports true or limit has passed, and
// reports whether it did. It is for conditions that become true eventually;
// limit is a cap for a broken build, not a performance bound.
func waitUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy forwards TCP connections from 127.0.0.1 to a local PostgreSQL and
// can stop forwarding without closing anything, like a network partition.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	open   chan struct{} // closed while forwarding
	conns  []net.Conn
	closed bool
}

func newProxy(t *testing.T, port int) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), open: make(chan struct{})}
	close(p.open)
	t.Cleanup(p.close)
	go p.serve()
	return p
}

// dsn returns dsn (a URL) with its address replaced by the proxy's.
func (p *proxy) dsn(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.l.Addr().String()
	return u.String()
}

func (p *proxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = make(chan struct{})
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.resume()
	p.l.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		go func() {
			<-p.gate() // a paused network: the handshake never starts
			up, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(up) {
				c.Close()
				return
			}
			go p.pipe(up, c)
			p.pipe(c, up)
		}()
	}
}

// pipe copies src to dst, holding data back while paused.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

func TestHostScopingAndPlatformColumns(t *testing.T) {
	t.Parallel()
	dsn := pg.Server(t).CreateDatabase(t, t.Name())
	ctx := context.Background()
	ra := mustOpen(t, dsn, "host-a", postgres.Options{})
	rb := mustOpen(t, dsn, "host-b", postgres.Options{})
	a, b := newInstance("tool"), newInstance("tool")
	b.AccountToolInstanceID = a.AccountToolInstanceID
	b.Ports = nil
	b.DockerStatus, b.ContainerID = dtma.DockerRunning, "0123456789abcdef"
	if err := ra.CreateInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := rb.CreateInstance(ctx, b); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    dtma.Registry
		all  bool
		want []string
	}{
		{ra, false, []string{a.ID}},
		{rb, false, []string{b.ID}},
		{ra, true, []string{a.ID, b.ID}},
		{rb, true, []string{a.ID, b.ID}},
	} {
		rows, err := tc.r.FindInstances(ctx, dtma.InstanceFilter{AllHosts: tc.all})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, row := range rows {
			ids = append(ids, row.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("%s FindInstances(AllHosts=%v) = %v, want %v", tc.r.HostID(), tc.all, ids, tc.want)
		}
	}
	if _, err := rb.FindInstanceByID(ctx, a.ID); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Errorf("host-b FindInstanceByID of host-a's row: %v, want not found", err)
	}

	// The platform's columns hold what the platform expects.
	conn := connect(t, dsn)
	for _, want := range []*dtma.Instance{a, b} {
		var (
			host, image, status, account string
			containerID, dockerStatus    *string
			bindings                     map[string][]dtma.DockerHostBinding
		)
		err := conn.QueryRow(ctx, `SELECT host_id, docker_image_url, dtma_status, account_tool_instance_id::text,
			container_id, docker_status, port_bindings FROM dtma_container_registry WHERE id = $1`, want.ID).
			Scan(&host, &image, &status, &account, &containerID, &dockerStatus, &bindings)
		if err != nil {
			t.Fatal(err)
		}
		if host != want.HostID || image != want.Spec.Image || status != string(want.Status) || account != want.AccountToolInstanceID {
			t.Errorf("row %s: host %q image %q status %q account %q, want %q %q %q %q",
				want.ID, host, image, status, account, want.HostID, want.Spec.Image, want.Status, want.AccountToolInstanceID)
		}
		if wantBindings := dtma.DockerPortBindings(want.Ports); !reflect.DeepEqual(bindings, wantBindings) {
			t.Errorf("row %s: port_bindings %v, want %v", want.ID, bindings, wantBindings)
		}
		if (containerID == nil) != (want.ContainerID == "") || (containerID != nil && *containerID != want.ContainerID) {
			t.Errorf("row %s: container_id %v, want %q (NULL when empty)", want.ID, containerID, want.ContainerID)
		}
		if (dockerStatus == nil) != (want.DockerStatus == "") || (dockerStatus != nil && *dockerStatus != string(want.DockerStatus)) {
			t.Errorf("row %s: docker_status %v, want %q (NULL when never observed)", want.ID, dockerStatus, want.DockerStatus)
		}
	}
	var bindingsJSON string
	if err := conn.QueryRow(ctx, "SELECT port_bindings::text FROM dtma_container_registry WHERE id = $1", a.ID).Scan(&bindingsJSON); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bindingsJSON, `"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30080"}]`) {
		t.Errorf("port_bindings = %s, want Docker's shape with \"8080/tcp\"", bindingsJSON)
	}
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	dsn := pg.Server(t).CreateDatabase(t, t.Name())
	ctx := context.Background()
	r := mustOpen(t, dsn, "host-a", postgres.Options{})
	a := newInstance("Alpha Tool")
	if err := r.CreateInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field, value string
		mutate       func(*dtma.Instance)
	}{
		{"name", `"Alpha Tool"`, func(i *dtma.Instance) { i.Name = a.Name }},
		{"account_tool_instance_id", a.AccountToolInstanceID, func(i *dtma.Instance) { i.AccountToolInstanceID = a.AccountToolInstanceID }},
		{"container_name", `"` + a.ContainerName + `"`, func(i *dtma.Instance) { i.ContainerName = a.ContainerName }},
		{"id", a.ID, func(i *dtma.Instance) { i.ID = a.ID }},
	} {
		dup := newInstance("beta")
		tc.mutate(dup)
		err := r.CreateInstance(ctx, dup)
		assertCode(t, "duplicate "+tc.field, err, dtma.ECONFLICT)
		if f := dtma.ErrorField(err); f != tc.field {
			t.Errorf("duplicate %s: field %q, want %q", tc.field, f, tc.field)
		}
		if msg := dtma.ErrorMessage(err); !strings.Contains(msg, tc.value) {
			t.Errorf("duplicate %s: message %q does not name the value %s", tc.field, msg, tc.value)
		}
	}

	bad := newInstance("bad-account")
	bad.AccountToolInstanceID = "not-a-uuid"
	assertCode(t, "CreateInstance with a malformed account id", r.CreateInstance(ctx, bad), dtma.EINVALID)
	upd := a.Clone()
	upd.AccountToolInstanceID = "not-a-uuid"
	assertCode(t, "UpdateInstance with a malformed account id", r.UpdateInstance(ctx, upd), dtma.EINVALID)
	notUUID := "not-a-uuid"
	_, err := r.FindInstances(ctx, dtma.InstanceFilter{AccountToolInstanceID: &notUUID})
	assertCode(t, "FindInstances with a malformed account id", err, dtma.EINVALID)
	rows, err := r.FindInstances(ctx, dtma.InstanceFilter{ID: &notUUID})
	if err != nil || len(rows) != 0 {
		t.Errorf("FindInstances with a malformed id = %d rows, %v; want none, nil", len(rows), err)
	}
	_, err = r.UpdateObserved(ctx, notUUID, dtma.Observed{})
	assertCode(t, "UpdateObserved of a malformed id", err, dtma.ENOTFOUND)
	assertCode(t, "DeleteInstance of a malformed id", r.DeleteInstance(ctx, notUUID), "")

	long := newInstance("long")
	long.ContainerName = strings.Repeat("c", 300)
	assertCode(t, "CreateInstance with a 300-byte container name", r.CreateInstance(ctx, long), dtma.EINVALID)
}

// TestOpenAdoptsPlatformTable: the platform may create dtma_container_registry
// itself, with only its own columns and rows of its own; Open adds DTMA's
// columns without touching those rows, and the registry works on the table.
func TestOpenAdoptsPlatformTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pg.Server(t).CreateDatabase(t, t.Name())
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE dtma_container_registry (
		id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
		account_tool_instance_id UUID,
		container_name VARCHAR(255) NOT NULL,
		docker_image_url TEXT NOT NULL,
		container_id VARCHAR(64),
		dtma_status VARCHAR(50) NOT NULL,
		docker_status VARCHAR(50),
		port_bindings JSONB DEFAULT '{}',
		created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
		updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
		INSERT INTO dtma_container_registry (container_name, docker_image_url, dtma_status) VALUES ('old-a', 'x:1', 'running'), ('old-b', 'x:1', 'running');`); err != nil {
		t.Fatal(err)
	}
	reg, err := postgres.Open(ctx, dsn, "host-platform", postgres.Options{})
	if err != nil {
		t.Fatalf("open on the platform's table: %v", err)
	}
	defer reg.Close()
	inst := registrytest.NewInstance("adopted table")
	if err := reg.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("create: %v", err)
	}
	rows, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil || len(rows) != 1 || rows[0].Name != "adopted table" {
		t.Fatalf("rows %v err %v: want only the agent's own row", rows, err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM dtma_container_registry WHERE host_id = ''`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("platform rows: %d, %v", n, err)
	}
}
