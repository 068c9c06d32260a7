package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/moby/moby/client"
)

// pgContainersOf lists the containers of this test run labelled
// dtma.instance=name (whatever their host label).
func pgContainersOf(t *testing.T, dc *client.Client, name string) []string {
	t.Helper()
	f := client.Filters{}.Add("label", dockertest.TestLabel+"="+dockertest.RunID()).Add("label", "dtma.instance="+name)
	list, err := dc.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatalf("list containers of %q: %v", name, err)
	}
	var ids []string
	for _, c := range list.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// pgExpect503 sends a request and checks for 503 with the v1 code
// "unavailable".
func (a *Agent) pgExpect503(method, path string, body any) {
	a.t.Helper()
	r := a.Do(method, path, body)
	var env struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if r.Status != 503 || json.Unmarshal(r.Body, &env) != nil || env.Error.Code != "unavailable" {
		a.t.Fatalf("%s %s during the outage: %d %s, want 503 with code unavailable", method, path, r.Status, r.Body)
	}
}

// TestPostgresOutage stops PostgreSQL under a running agent: writes answer
// 503 and change nothing in Docker, reads are served from memory, a change
// made behind the agent's back meanwhile is caught up once the server is
// back, which the agent notices by itself; no row is lost.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	srv := pgtest.Start(t) // its own server: this test stops it
	dsn := srv.CreateDatabase(t, t.Name())
	a := StartAgent(t, AgentOptions{RegistryURL: dsn, Env: []string{
		"DTMA_REGISTRY_CONNECT_TIMEOUT=2s", "DTMA_REGISTRY_STATEMENT_TIMEOUT=2s",
	}})

	keep := a.pgDeploy(map[string]any{"name": "keep-running", "image": img, "env": map[string]string{"ECHO": "kept"}, "ports": []map[string]any{{"container_port": 8080}}})
	drift := a.pgDeploy(map[string]any{"name": "stopped-behind", "image": img})
	idle := a.pgDeploy(map[string]any{"name": "idle", "image": img})
	gone := a.pgDeploy(map[string]any{"name": "removed-behind", "image": img})
	a.Expect(200, "POST", "/v1/instances/idle/stop", nil)
	rowsBefore := pgMustRows(t, dsn, a.HostID)
	if len(rowsBefore) != 4 {
		t.Fatalf("%d rows before the outage, want 4", len(rowsBefore))
	}
	_, keepStarted := pgDockerState(t, a.Docker, keep.ContainerID)
	Eventually(t, 20*time.Second, "keep-running answers", func() bool { return HTTPGet(keep.Ports[0].HostPort, "/") == "kept" })

	srv.Stop(t)

	// Writes: 503 unavailable, and nothing done in Docker.
	a.pgExpect503("POST", "/v1/instances", map[string]any{"name": "during-outage", "image": img})
	if ids := pgContainersOf(t, a.Docker, "during-outage"); len(ids) != 0 {
		t.Fatalf("deploy during the outage created containers %v without a row", ids)
	}
	a.pgExpect503("POST", "/v1/instances/idle/start", nil)
	if st, _ := pgDockerState(t, a.Docker, idle.ContainerID); st != "exited" {
		t.Errorf("idle after a refused start: docker %s, want exited", st)
	}
	a.pgExpect503("POST", "/v1/instances/keep-running/stop", nil)
	a.pgExpect503("POST", "/v1/instances/keep-running/restart", nil)
	a.pgExpect503("DELETE", "/v1/instances/keep-running", nil)
	if st, started := pgDockerState(t, a.Docker, keep.ContainerID); st != "running" || started != keepStarted {
		t.Errorf("keep-running after refused stop/restart/remove: docker %s StartedAt %s (was %s)", st, started, keepStarted)
	}
	// The legacy face refuses too.
	if r := a.Do("POST", "/tools", map[string]any{"instanceNameOnToolbox": "legacy-outage", "dockerImageUrl": img}); r.Status != 503 {
		t.Errorf("legacy deploy during the outage: %d %s, want 503", r.Status, r.Body)
	}
	if ids := pgContainersOf(t, a.Docker, "legacy-outage"); len(ids) != 0 {
		t.Errorf("legacy deploy during the outage created containers %v", ids)
	}

	// Reads are served from memory; the fleet view (the shared table) and
	// the health say the registry is down.
	list := a.pgList("/v1/instances")
	if len(list) != 4 {
		t.Fatalf("GET /v1/instances during the outage lists %d instances, want 4", len(list))
	}
	if got := a.pgGet("keep-running"); got.DockerStatus != "running" || got.ContainerID != keep.ContainerID {
		t.Errorf("GET keep-running during the outage: %+v", got)
	}
	var legacy struct {
		Tools []map[string]any `json:"tool_instances"`
	}
	if r := a.Do("GET", "/tools/status", nil); r.Status != 200 || json.Unmarshal(r.Body, &legacy) != nil || len(legacy.Tools) != 4 {
		t.Errorf("legacy GET /tools/status during the outage: %d %s, want 200 with 4 tools", r.Status, r.Body)
	}
	a.pgExpect503("GET", "/v1/fleet/instances", nil)
	var health struct {
		RegistryOK bool `json:"registry_ok"`
		DockerOK   bool `json:"docker_ok"`
	}
	if r := a.Do("GET", "/v1/health", nil); r.Status != 503 || json.Unmarshal(r.Body, &health) != nil || health.RegistryOK || !health.DockerOK {
		t.Errorf("/v1/health during the outage: %d %s", r.Status, r.Body)
	}
	Eventually(t, 20*time.Second, "keep-running answers during the outage", func() bool { return HTTPGet(keep.Ports[0].HostPort, "/") == "kept" })

	// Behind the agent's back while PostgreSQL is down: the in-memory view
	// follows Docker.
	pgDockerStop(t, a.Docker, drift.ContainerID)
	Eventually(t, 60*time.Second, "the agent's view shows stopped-behind exited", func() bool {
		got := a.pgGet("stopped-behind")
		return got.DockerStatus == "exited" && got.DTMAStatus == "stopped"
	})
	// A container removed behind the agent's back while PostgreSQL is down
	// shows as missing; it is not recreated before the intent to recreate
	// it can be recorded.
	if _, err := a.Docker.ContainerRemove(context.Background(), gone.ContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "the agent's view shows removed-behind missing", func() bool {
		got := a.pgGet("removed-behind")
		return got.DockerStatus == "missing" && got.DesiredState == "running" && got.Drift
	})
	if ids := pgContainersOf(t, a.Docker, "removed-behind"); len(ids) != 0 {
		t.Errorf("removed-behind was recreated as %v while its intent could not be recorded", ids)
	}

	srv.Restart(t)

	// The agent reconnects by itself and catches up what it could not
	// write; no row was lost and none was added.
	Eventually(t, 60*time.Second, "the table catches up stopped-behind exited", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "stopped-behind")
		return r != nil && r.DockerStatus == "exited" && r.DTMAStatus == "stopped"
	})
	// ... and recreates the removed container once it can record doing so.
	Eventually(t, 60*time.Second, "removed-behind recreated and recorded", func() bool {
		rows, err := pgRows(context.Background(), dsn, a.HostID)
		if err != nil {
			return false
		}
		r := pgRowNamed(rows, "removed-behind")
		return r != nil && r.ContainerID != "" && r.ContainerID != gone.ContainerID && r.DockerStatus == "running" && r.DTMAStatus == "running"
	})
	if ids := pgContainersOf(t, a.Docker, "removed-behind"); len(ids) != 1 {
		t.Errorf("removed-behind has containers %v after the outage, want exactly one", ids)
	}
	Eventually(t, 30*time.Second, "health reports the registry back", func() bool {
		return a.Do("GET", "/v1/health", nil).Status == 200
	})
	rowsAfter := pgMustRows(t, dsn, a.HostID)
	if len(rowsAfter) != len(rowsBefore) {
		t.Fatalf("%d rows after the outage, %d before", len(rowsAfter), len(rowsBefore))
	}
	for _, before := range rowsBefore {
		after := pgRowNamed(rowsAfter, before.Name)
		if after == nil || after.ID != before.ID {
			t.Errorf("row %q before %+v, after %+v", before.Name, before, after)
			continue
		}
		if before.Name == "removed-behind" {
			continue // recreated: checked above
		}
		if after.ContainerID != before.ContainerID {
			t.Errorf("row %q container %s after the outage, was %s", before.Name, after.ContainerID, before.ContainerID)
		}
		want := before.DockerStatus
		if before.Name == "stopped-behind" {
			want = "exited"
		}
		if after.DockerStatus != want || after.DesiredState != before.DesiredState {
			t.Errorf("row %q after the outage: docker_status %s desired %s, want %s and %s", before.Name, after.DockerStatus, after.DesiredState, want, before.DesiredState)
		}
	}
	if r := pgRowNamed(rowsAfter, "during-outage"); r != nil {
		t.Errorf("the refused deploy left a row: %+v", r)
	}
	if ids := pgContainersOf(t, a.Docker, "during-outage"); len(ids) != 0 {
		t.Errorf("the refused deploy left containers %v", ids)
	}

	// Writes work again, without restarting the agent.
	a.Expect(200, "POST", "/v1/instances/idle/start", nil)
	a.pgDeploy(map[string]any{"name": "after-outage", "image": img})
	if n := len(pgMustRows(t, dsn, a.HostID)); n != 5 {
		t.Errorf("%d rows after a deploy following the outage, want 5", n)
	}
	if r := pgRowNamed(pgMustRows(t, dsn, a.HostID), "idle"); r == nil || r.DockerStatus != "running" || r.DTMAStatus != "running" {
		t.Errorf("idle row after start: %+v", r)
	}
}

// TestPostgresDownAtStart: an agent started while PostgreSQL is down waits
// for it instead of exiting, and serves once it is back.
func TestPostgresDownAtStart(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase(t, t.Name())
	srv.Stop(t)
	back := make(chan struct{})
	go func() {
		defer close(back)
		time.Sleep(3 * time.Second) // the agent is waiting for the registry by now
		srv.Restart(t)
	}()
	a := StartAgent(t, AgentOptions{RegistryURL: dsn}) // waits for /health
	<-back
	if !strings.Contains(a.Logs(), "postgres registry unavailable; retrying") {
		t.Fatalf("the agent did not wait for PostgreSQL:\n%s", a.Logs())
	}
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "after-wait", "image": img})
	if rows := pgMustRows(t, dsn, a.HostID); len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
}
