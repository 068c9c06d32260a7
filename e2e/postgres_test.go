package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/pgtest"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/client"
)

// sharedPG is one PostgreSQL server for the tests of this package that do
// not stop it; each test gets its own database. It is started by the first
// test that asks and closed when the last test using it ends (a later test
// starts a new one), so no server or directory outlives the package run.
var sharedPG struct {
	mu    sync.Mutex
	sh    *pgtest.Shared
	users int
}

// sharedPostgres returns the shared server, held for t until its end.
func sharedPostgres(t *testing.T) *pgtest.Server {
	t.Helper()
	sharedPG.mu.Lock()
	if sharedPG.sh == nil {
		sharedPG.sh = &pgtest.Shared{}
	}
	sh := sharedPG.sh
	sharedPG.users++
	sharedPG.mu.Unlock()
	t.Cleanup(func() {
		sharedPG.mu.Lock()
		defer sharedPG.mu.Unlock()
		if sharedPG.users--; sharedPG.users == 0 {
			sharedPG.sh.Close()
			sharedPG.sh = nil
		}
	})
	return sh.Server(t)
}

// pgDatabase returns the DSN of a fresh database on the shared server.
func pgDatabase(t *testing.T) string {
	t.Helper()
	return sharedPostgres(t).CreateDatabase(t, t.Name())
}

// pgRow is a dtma_container_registry row: the platform's columns
// plus the host id and name.
type pgRow struct {
	ID, AccountToolInstanceID, ContainerName, DockerImageURL string
	ContainerID, DTMAStatus, DockerStatus                    string
	PortBindings                                             map[string][]map[string]string
	CreatedAt, UpdatedAt                                     time.Time
	HostID, Name, DesiredState                               string
}

// pgRows reads the rows of host (every host when "") ordered by
// creation, on a connection of its own (the server may have been
// restarted since the last call).
func pgRows(ctx context.Context, dsn, host string) ([]pgRow, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id::text, COALESCE(account_tool_instance_id::text, ''), container_name,
		docker_image_url, COALESCE(container_id, ''), dtma_status, COALESCE(docker_status, ''),
		port_bindings, created_at, updated_at, host_id, name, desired_state
		FROM dtma_container_registry WHERE $1 = '' OR host_id = $1 ORDER BY created_at, name`, host)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pgRow
	for rows.Next() {
		var r pgRow
		var pb []byte
		if err := rows.Scan(&r.ID, &r.AccountToolInstanceID, &r.ContainerName, &r.DockerImageURL, &r.ContainerID,
			&r.DTMAStatus, &r.DockerStatus, &pb, &r.CreatedAt, &r.UpdatedAt, &r.HostID, &r.Name, &r.DesiredState); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(pb, &r.PortBindings); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func pgMustRows(t *testing.T, dsn, host string) []pgRow {
	t.Helper()
	rows, err := pgRows(context.Background(), dsn, host)
	if err != nil {
		t.Fatalf("query dtma_container_registry: %v", err)
	}
	return rows
}

func pgRowNamed(rows []pgRow, name string) *pgRow {
	for i := range rows {
		if rows[i].Name == name {
			return &rows[i]
		}
	}
	return nil
}

// dtmaCLI runs the built dtma binary with env (plus PATH and HOME) and
// returns its output and exit code.
func dtmaCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run dtma %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (a *Agent) pgList(path string) []dtmahttp.Instance {
	a.t.Helper()
	var body struct {
		Instances []dtmahttp.Instance `json:"instances"`
	}
	a.Expect(200, "GET", path, nil).Decode(a.t, &body)
	return body.Instances
}

func (a *Agent) pgGet(ref string) dtmahttp.Instance {
	a.t.Helper()
	var inst dtmahttp.Instance
	a.Expect(200, "GET", "/v1/instances/"+url.PathEscape(ref), nil).Decode(a.t, &inst)
	return inst
}

func (a *Agent) pgDeploy(body map[string]any) dtmahttp.Instance {
	a.t.Helper()
	var inst dtmahttp.Instance
	a.Expect(201, "POST", "/v1/instances", body).Decode(a.t, &inst)
	return inst
}

// pgDockerState returns a container's state word and StartedAt as Docker
// reports them ("missing" when there is no such container).
func pgDockerState(t *testing.T, dc *client.Client, id string) (status, startedAt string) {
	t.Helper()
	res, err := dc.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "missing", ""
		}
		t.Fatalf("inspect %s: %v", id, err)
	}
	return string(res.Container.State.Status), res.Container.State.StartedAt
}

// pgDockerStop stops a container behind the agent's back.
func pgDockerStop(t *testing.T, dc *client.Client, id string) {
	t.Helper()
	secs := 5
	if _, err := dc.ContainerStop(context.Background(), id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		t.Fatalf("docker stop %s: %v", id, err)
	}
}

// TestPostgresRegistry runs an agent on PostgreSQL through deploy and
// lifecycle, reads the platform's columns straight from the table,
// restarts the agent with SIGKILL, and stops a container behind its back.
func TestPostgresRegistry(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	dsn := pgDatabase(t)
	a := StartAgent(t, AgentOptions{RegistryURL: dsn})
	if logs := a.Logs(); !strings.Contains(logs, `"registry":"postgres"`) {
		t.Fatalf("agent does not say it runs on PostgreSQL:\n%s", logs)
	}

	acct := "5a0c0f5e-7d7b-4e52-9a38-0e6f2b1c9d01"
	one := a.pgDeploy(map[string]any{
		"name": "pg one", "account_tool_instance_id": acct, "image": img,
		"env":   map[string]string{"ECHO": "pg-one", "API_KEY": "pg-secret-value"},
		"ports": []map[string]any{{"container_port": 8080}},
	})
	port2 := freePort(t)
	two := a.pgDeploy(map[string]any{
		"name": "pg-two", "image": img, "env": map[string]string{"ECHO": "pg-two"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": port2}},
	})
	port1 := one.Ports[0].HostPort
	if port1 == 0 || one.Ports[0].HostIP != "127.0.0.1" {
		t.Fatalf("pg one ports = %+v, want an allocated port on 127.0.0.1", one.Ports)
	}
	Eventually(t, 20*time.Second, "pg one answers", func() bool { return HTTPGet(port1, "/") == "pg-one" })
	Eventually(t, 20*time.Second, "pg-two answers", func() bool { return HTTPGet(port2, "/") == "pg-two" })

	// Lifecycle: stop, start, restart.
	a.Expect(200, "POST", "/v1/instances/pg-two/stop", nil)
	if st, _ := pgDockerState(t, a.Docker, two.ContainerID); st != "exited" {
		t.Fatalf("pg-two after stop: docker says %s", st)
	}
	rows := pgMustRows(t, dsn, a.HostID)
	if r := pgRowNamed(rows, "pg-two"); r == nil || r.DTMAStatus != "stopped" || r.DockerStatus != "exited" || r.DesiredState != "stopped" {
		t.Fatalf("pg-two row after stop = %+v", r)
	}
	a.Expect(200, "POST", "/v1/instances/pg-two/start", nil)
	a.Expect(200, "POST", "/v1/instances/"+one.ID+"/restart", nil)
	Eventually(t, 20*time.Second, "both answer after start/restart", func() bool {
		return HTTPGet(port1, "/") == "pg-one" && HTTPGet(port2, "/") == "pg-two"
	})

	// The platform's columns, read straight from the table.
	pgCheckColumnTypes(t, dsn)
	rows = pgMustRows(t, dsn, a.HostID)
	if len(rows) != 2 {
		t.Fatalf("%d rows for host %s, want 2: %+v", len(rows), a.HostID, rows)
	}
	for _, want := range []dtmahttp.Instance{a.pgGet(one.ID), a.pgGet("pg-two")} {
		r := pgRowNamed(rows, want.Name)
		if r == nil {
			t.Fatalf("no row named %q", want.Name)
		}
		if r.ID != want.ID || r.HostID != a.HostID || r.ContainerName != want.ContainerName || r.DockerImageURL != img ||
			r.ContainerID != want.ContainerID || len(r.ContainerID) != 64 || r.DTMAStatus != "running" || r.DockerStatus != "running" {
			t.Errorf("row %q = %+v\nwant the API's %+v", want.Name, r, want)
		}
		wantAcct := ""
		if want.AccountToolInstanceID != nil {
			wantAcct = *want.AccountToolInstanceID
		}
		if r.AccountToolInstanceID != wantAcct {
			t.Errorf("row %q account_tool_instance_id = %q, want %q", want.Name, r.AccountToolInstanceID, wantAcct)
		}
		// port_bindings is Docker's own PortBindings shape and value.
		wantPB := map[string][]map[string]string{"8080/tcp": {{"HostIp": "127.0.0.1", "HostPort": strconv.Itoa(want.Ports[0].HostPort)}}}
		if !reflect.DeepEqual(r.PortBindings, wantPB) {
			t.Errorf("row %q port_bindings = %v, want %v", want.Name, r.PortBindings, wantPB)
		}
		ins, err := a.Docker.ContainerInspect(context.Background(), r.ContainerID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var dockerPB map[string][]map[string]string
		b, _ := json.Marshal(ins.Container.HostConfig.PortBindings)
		_ = json.Unmarshal(b, &dockerPB)
		if !reflect.DeepEqual(r.PortBindings, dockerPB) {
			t.Errorf("row %q port_bindings = %v, Docker's PortBindings = %v", want.Name, r.PortBindings, dockerPB)
		}
		if r.CreatedAt.IsZero() || r.UpdatedAt.Before(r.CreatedAt) || time.Since(r.CreatedAt) > 10*time.Minute {
			t.Errorf("row %q created_at %v updated_at %v", want.Name, r.CreatedAt, r.UpdatedAt)
		}
	}
	if r := pgRowNamed(rows, "pg one"); r != nil && r.AccountToolInstanceID != acct {
		t.Errorf("pg one account_tool_instance_id = %q, want %q", r.AccountToolInstanceID, acct)
	}
	// pg-two was stopped and started: its row was updated after it was made.
	if r := pgRowNamed(rows, "pg-two"); r != nil && !r.UpdatedAt.After(r.CreatedAt) {
		t.Errorf("pg-two updated_at %v not after created_at %v", r.UpdatedAt, r.CreatedAt)
	}
	// Env values are stored (to recreate containers) but only in spec.
	var leaks int
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(ctx, `SELECT count(*) FROM dtma_container_registry WHERE
		concat_ws('|', container_name, docker_image_url, dtma_status, docker_status, port_bindings::text, last_error, ports::text) LIKE '%pg-secret-value%'`).Scan(&leaks)
	conn.Close(ctx)
	if err != nil || leaks != 0 {
		t.Errorf("env value found outside the spec column in %d rows (%v)", leaks, err)
	}

	// kill -9 and start again on the same database: same containers, not
	// restarted, all served.
	before := map[string]string{}
	for _, inst := range a.pgList("/v1/instances") {
		_, started := pgDockerState(t, a.Docker, inst.ContainerID)
		before[inst.ContainerID] = started
	}
	a.Restart()
	after := a.pgList("/v1/instances")
	if len(after) != 2 {
		t.Fatalf("after restart the agent lists %d instances, want 2", len(after))
	}
	for _, inst := range after {
		started, ok := before[inst.ContainerID]
		if !ok {
			t.Errorf("after restart %q has container %s, not one of %v", inst.Name, inst.ContainerID, before)
			continue
		}
		st, nowStarted := pgDockerState(t, a.Docker, inst.ContainerID)
		if st != "running" || nowStarted != started {
			t.Errorf("%q after agent restart: docker %s, StartedAt %s (was %s)", inst.Name, st, nowStarted, started)
		}
	}
	if n := len(a.HostContainers()); n != 2 {
		t.Errorf("%d containers for the host after restart, want 2", n)
	}
	Eventually(t, 20*time.Second, "both answer after agent restart", func() bool {
		return HTTPGet(port1, "/") == "pg-one" && HTTPGet(port2, "/") == "pg-two"
	})

	// Out of band: `docker stop` behind the agent's back shows in the
	// table (docker_status exited, dtma_status stopped) and in the API as
	// drift; the agent does not fight it.
	pgDockerStop(t, a.Docker, one.ContainerID)
	Eventually(t, 60*time.Second, "table shows pg one exited", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "pg one")
		return r != nil && r.DockerStatus == "exited" && r.DTMAStatus == "stopped"
	})
	got := a.pgGet("pg one")
	if got.DockerStatus != "exited" || got.DTMAStatus != "stopped" || got.DesiredState != "running" || !got.Drift {
		t.Errorf("API after docker stop: %+v, want exited/stopped with desired running and drift", got)
	}
	if st, _ := pgDockerState(t, a.Docker, one.ContainerID); st != "exited" {
		t.Errorf("agent restarted the container stopped behind its back: %s", st)
	}
	r := pgRowNamed(pgMustRows(t, dsn, a.HostID), "pg one")
	if r.ContainerID != one.ContainerID || r.DesiredState != "running" {
		t.Errorf("row after docker stop: %+v", r)
	}
	// `docker start` behind its back shows too.
	if _, err := a.Docker.ContainerStart(context.Background(), one.ContainerID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "table shows pg one running again", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "pg one")
		return r != nil && r.DockerStatus == "running" && r.DTMAStatus == "running"
	})
}

// pgCheckColumnTypes asserts the platform's column types.
func pgCheckColumnTypes(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_name = 'dtma_container_registry'`)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		types[name] = typ
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "uuid", "account_tool_instance_id": "uuid", "container_name": "character varying",
		"docker_image_url": "text", "container_id": "character varying", "dtma_status": "character varying",
		"docker_status": "character varying", "port_bindings": "jsonb",
		"created_at": "timestamp with time zone", "updated_at": "timestamp with time zone", "host_id": "text",
	}
	for col, typ := range want {
		if types[col] != typ {
			t.Errorf("column %s has type %q, want %q", col, types[col], typ)
		}
	}
}

// pgExec runs one statement on dsn and returns the rows it affected.
func pgExec(t *testing.T, dsn, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

// pgPendingOp reads a row's pending_op ("" when settled; "?" when no row).
func pgPendingOp(dsn, host, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "?"
	}
	defer conn.Close(context.Background())
	var op string
	if err := conn.QueryRow(ctx, `SELECT pending_op FROM dtma_container_registry WHERE host_id = $1 AND name = $2`, host, name).Scan(&op); err != nil {
		return "?"
	}
	return op
}

// TestPostgresReconciler checks the reconciler's and crash-safety
// guarantees on PostgreSQL: a container removed behind the agent's back is
// recreated; an operation whose intent was recorded before a crash is
// finished at the next start; a lost row is rebuilt from the container's
// labels without touching the container.
func TestPostgresReconciler(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	dsn := pgDatabase(t)
	a := StartAgent(t, AgentOptions{RegistryURL: dsn})
	acct := "c0ffee00-1234-4abc-8def-0123456789ab"
	run := a.pgDeploy(map[string]any{"name": "cs-run", "image": img, "account_tool_instance_id": acct,
		"env": map[string]string{"ECHO": "cs-run"}, "ports": []map[string]any{{"container_port": 8080}}})
	stop := a.pgDeploy(map[string]any{"name": "cs-stop", "image": img})
	gone := a.pgDeploy(map[string]any{"name": "cs-gone", "image": img, "env": map[string]string{"ECHO": "cs-gone"},
		"ports": []map[string]any{{"container_port": 8080}}})

	// Removed behind the agent's back while wanted running: recreated,
	// and the table records the new container.
	if _, err := a.Docker.ContainerRemove(context.Background(), gone.ContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	var recreated string
	Eventually(t, 60*time.Second, "cs-gone recreated and recorded", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "cs-gone")
		if r == nil || r.ContainerID == "" || r.ContainerID == gone.ContainerID || r.DockerStatus != "running" || r.DTMAStatus != "running" {
			return false
		}
		recreated = r.ContainerID
		return true
	})
	if st, _ := pgDockerState(t, a.Docker, recreated); st != "running" {
		t.Errorf("recreated container %s is %s", recreated, st)
	}
	Eventually(t, 20*time.Second, "recreated cs-gone answers", func() bool { return HTTPGet(gone.Ports[0].HostPort, "/") == "cs-gone" })

	// A crash: the agent dies after recording the intent to stop cs-stop
	// but before stopping it, and after cs-run's row was lost.
	a.Kill()
	if n := pgExec(t, dsn, `UPDATE dtma_container_registry SET desired_state = 'stopped', pending_op = 'stop', dtma_status = 'stopping'
		WHERE host_id = $1 AND name = 'cs-stop'`, a.HostID); n != 1 {
		t.Fatalf("updated %d rows for cs-stop", n)
	}
	if n := pgExec(t, dsn, `DELETE FROM dtma_container_registry WHERE host_id = $1 AND name = 'cs-run'`, a.HostID); n != 1 {
		t.Fatalf("deleted %d rows for cs-run", n)
	}
	_, runStarted := pgDockerState(t, a.Docker, run.ContainerID)
	a.Restart()

	Eventually(t, 60*time.Second, "the interrupted stop finished", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "cs-stop")
		return r != nil && r.DockerStatus == "exited" && r.DTMAStatus == "stopped" && pgPendingOp(dsn, a.HostID, "cs-stop") == ""
	})
	if st, _ := pgDockerState(t, a.Docker, stop.ContainerID); st != "exited" {
		t.Errorf("cs-stop container is %s after the interrupted stop was finished", st)
	}
	Eventually(t, 60*time.Second, "cs-run's lost row rebuilt", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		return err == nil && pgRowNamed(rows, "cs-run") != nil
	})
	r := pgRowNamed(pgMustRows(t, dsn, a.HostID), "cs-run")
	if r.ID != run.ID || r.ContainerID != run.ContainerID || r.AccountToolInstanceID != acct || r.ContainerName != run.ContainerName ||
		r.DockerImageURL != img || r.DockerStatus != "running" || r.DTMAStatus != "running" || r.DesiredState != "running" {
		t.Errorf("rebuilt cs-run row %+v, want the instance %+v", r, run)
	}
	wantPB := map[string][]map[string]string{"8080/tcp": {{"HostIp": "127.0.0.1", "HostPort": strconv.Itoa(run.Ports[0].HostPort)}}}
	if !reflect.DeepEqual(r.PortBindings, wantPB) {
		t.Errorf("rebuilt cs-run port_bindings %v, want %v", r.PortBindings, wantPB)
	}
	if st, started := pgDockerState(t, a.Docker, run.ContainerID); st != "running" || started != runStarted {
		t.Errorf("cs-run container after adoption: %s, StartedAt %s (was %s)", st, started, runStarted)
	}
	// The rebuilt row keeps the env values (read back from the container),
	// so a later recreate would be exact: an identical re-deploy matches.
	r2 := a.Do("POST", "/v1/instances", map[string]any{"name": "cs-run", "image": img, "account_tool_instance_id": acct,
		"env": map[string]string{"ECHO": "cs-run"}, "ports": []map[string]any{{"container_port": 8080}}})
	if r2.Status != 200 {
		t.Errorf("identical re-deploy of the rebuilt cs-run: %d %s, want 200", r2.Status, r2.Body)
	}
	if n := len(a.HostContainers()); n != 3 {
		t.Errorf("%d containers for the host, want 3", n)
	}
}
