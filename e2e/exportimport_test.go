package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// xiRead parses an export as generic JSON (every field, whatever
// the CLI's types), dropping exported_at, the one field two exports of the
// same rows may differ in.
func xiRead(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read export: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("export %s is not JSON: %v\n%s", path, err, data)
	}
	if m["format"] != "dtma-registry/v1" {
		t.Fatalf("export format %v", m["format"])
	}
	if _, ok := m["exported_at"]; !ok {
		t.Fatalf("export has no exported_at")
	}
	delete(m, "exported_at")
	return m
}

func xiInstances(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	raw, _ := m["instances"].([]any)
	var out []map[string]any
	for _, r := range raw {
		out = append(out, r.(map[string]any))
	}
	return out
}

// xiSame compares two exports field by field and reports every
// difference.
func xiSame(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	gi, wi := xiInstances(t, got), xiInstances(t, want)
	if len(gi) != len(wi) {
		t.Fatalf("%s: %d instances, want %d", what, len(gi), len(wi))
	}
	for i := range wi {
		for k, wv := range wi[i] {
			if gv := gi[i][k]; !reflect.DeepEqual(gv, wv) {
				t.Errorf("%s: instance %d (%v) field %s = %v, want %v", what, i, wi[i]["name"], k, gv, wv)
			}
		}
		for k := range gi[i] {
			if _, ok := wi[i][k]; !ok {
				t.Errorf("%s: instance %d has extra field %s", what, i, k)
			}
		}
	}
	for k := range want {
		if k != "instances" && !reflect.DeepEqual(got[k], want[k]) {
			t.Errorf("%s: %s = %v, want %v", what, k, got[k], want[k])
		}
	}
	if !t.Failed() {
		t.Errorf("%s: exports differ:\n got %v\nwant %v", what, got, want)
	}
}

// TestExportImport moves a host's registry from SQLite to PostgreSQL and
// back with `dtma registry export|import`, losing nothing; import is
// idempotent and refuses conflicts; an agent on the imported registry
// serves the same containers without recreating them.
func TestExportImport(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	host := a.HostID

	acct := "3f8e2b6c-9d4a-4f1e-8b7c-2a5d6e9f0c13"
	port2 := freePort(t)
	a.pgDeploy(map[string]any{
		"name": "exp one", "account_tool_instance_id": acct, "image": img,
		"env":   map[string]string{"ECHO": "exp-one", "API_KEY": "k3y-v@lue with spaces", "EMPTY": ""},
		"ports": []map[string]any{{"container_port": 8080}, {"container_port": 9090, "protocol": "udp"}},
	})
	a.pgDeploy(map[string]any{
		"name": "exp-two", "image": img, "env": map[string]string{"ECHO": "exp-two"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": port2, "host_ip": "127.0.0.1"}},
	})
	a.pgDeploy(map[string]any{"name": "exp-three", "image": img})
	a.Expect(200, "POST", "/v1/instances/exp-three/stop", nil)
	served := a.pgList("/v1/instances")
	if len(served) != 3 {
		t.Fatalf("agent lists %d instances, want 3", len(served))
	}
	startedAt := map[string]string{}
	for _, inst := range served {
		_, startedAt[inst.ContainerID] = pgDockerState(t, a.Docker, inst.ContainerID)
	}
	a.Stop() // SIGTERM: containers stay

	dir := t.TempDir()
	sqliteEnv := []string{"DTMA_DATA_DIR=" + a.Opts.DataDir, "DTMA_HOST_ID=" + host}
	first := filepath.Join(dir, "from-sqlite.json")
	if _, stderr, code := dtmaCLI(t, sqliteEnv, "registry", "export", "--output", first); code != 0 {
		t.Fatalf("export from SQLite: exit %d\n%s", code, stderr)
	}
	fromSQLite := xiRead(t, first)
	rows := xiInstances(t, fromSQLite)
	if len(rows) != 3 || fromSQLite["host_id"] != host {
		t.Fatalf("SQLite export: host %v, %d instances; want %s and 3", fromSQLite["host_id"], len(rows), host)
	}
	// The export holds what the agent served (and the env values, which
	// the API never shows).
	for i, inst := range served {
		r := rows[i]
		if r["id"] != inst.ID || r["name"] != inst.Name || r["container_id"] != inst.ContainerID || r["dtma_status"] != inst.DTMAStatus {
			t.Errorf("export row %d = %v, the agent served %+v", i, r, inst)
		}
	}
	if env := rows[0]["spec"].(map[string]any)["env"].(map[string]any); env["API_KEY"] != "k3y-v@lue with spaces" || env["EMPTY"] != "" {
		t.Errorf("export lost env values: %v", env)
	}
	if rows[0]["account_tool_instance_id"] != acct || rows[2]["desired_state"] != "stopped" {
		t.Errorf("export lost fields: %v / %v", rows[0], rows[2])
	}

	// SQLite -> PostgreSQL.
	dsn := pgDatabase(t)
	pgEnv := []string{"DTMA_REGISTRY_URL=" + dsn, "DTMA_HOST_ID=" + host, "DTMA_DATA_DIR=" + filepath.Join(dir, "unused")}
	out, stderr, code := dtmaCLI(t, pgEnv, "registry", "import", first)
	if code != 0 || strings.TrimSpace(out) != "imported 3, unchanged 0" {
		t.Fatalf("import into PostgreSQL: exit %d, %q\n%s", code, out, stderr)
	}
	fromPG := filepath.Join(dir, "from-pg.json")
	if _, stderr, code := dtmaCLI(t, pgEnv, "registry", "export", "--output", fromPG); code != 0 {
		t.Fatalf("export from PostgreSQL: exit %d\n%s", code, stderr)
	}
	xiSame(t, "PostgreSQL export vs SQLite export", xiRead(t, fromPG), fromSQLite)
	// The platform's columns are filled from the imported rows.
	pgRows := pgMustRows(t, dsn, host)
	if len(pgRows) != 3 || pgRows[0].Name != "exp one" || pgRows[0].AccountToolInstanceID != acct ||
		pgRows[0].ContainerID != served[0].ContainerID || pgRows[0].DockerStatus != "running" || len(pgRows[0].PortBindings) != 2 ||
		pgRows[2].DockerStatus != "exited" || pgRows[2].DTMAStatus != "stopped" {
		t.Errorf("imported table rows: %+v", pgRows)
	}

	// Importing again changes nothing.
	out, stderr, code = dtmaCLI(t, pgEnv, "registry", "import", first)
	if code != 0 || strings.TrimSpace(out) != "imported 0, unchanged 3" {
		t.Errorf("second import: exit %d, %q\n%s", code, out, stderr)
	}

	// A conflicting file (same id, another name) is refused whole, with a
	// report naming the row, and exit code 2.
	var modified map[string]any
	data, _ := os.ReadFile(first)
	_ = json.Unmarshal(data, &modified)
	insts := modified["instances"].([]any)
	insts[1].(map[string]any)["name"] = "exp-two-renamed"
	extra := map[string]any{}
	for k, v := range insts[2].(map[string]any) {
		extra[k] = v
	}
	extra["id"], extra["name"], extra["container_name"] = "9d0b7c4e-1111-4a2b-8c3d-4e5f6a7b8c9d", "exp-new", "dtma-exp-new"
	modified["instances"] = append(insts, extra) // a valid new row beside the conflict
	conflictFile := filepath.Join(dir, "conflict.json")
	data, _ = json.Marshal(modified)
	if err := os.WriteFile(conflictFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = dtmaCLI(t, pgEnv, "registry", "import", conflictFile)
	twoID := rows[1]["id"].(string)
	if code != 2 || !strings.Contains(stderr, "conflict: exp-two-renamed: id "+twoID+" exists with other content") ||
		!strings.Contains(stderr, "nothing written") || strings.Contains(out, "imported") {
		t.Errorf("conflicting import: exit %d, stdout %q\nstderr %s\nwant exit 2 and a report", code, out, stderr)
	}
	again := filepath.Join(dir, "from-pg-again.json")
	if _, stderr, code := dtmaCLI(t, pgEnv, "registry", "export", "--output", again); code != 0 {
		t.Fatalf("export from PostgreSQL: exit %d\n%s", code, stderr)
	}
	xiSame(t, "PostgreSQL after the refused import", xiRead(t, again), fromSQLite)

	// An agent on PostgreSQL with that host id serves the same containers:
	// nothing recreated or restarted.
	b := StartAgent(t, AgentOptions{HostID: host, RegistryURL: dsn})
	now := time.Now()
	b.pgWaitRelist(now)
	list := b.pgList("/v1/instances")
	if len(list) != 3 {
		t.Fatalf("agent on PostgreSQL lists %d instances, want 3", len(list))
	}
	for i, inst := range list {
		want := served[i]
		st, started := pgDockerState(t, b.Docker, inst.ContainerID)
		if inst.ID != want.ID || inst.Name != want.Name || inst.ContainerID != want.ContainerID || started != startedAt[want.ContainerID] ||
			inst.DTMAStatus != want.DTMAStatus || inst.DockerStatus != st {
			t.Errorf("agent on PostgreSQL serves %+v (docker %s, StartedAt %s); SQLite agent served %+v (StartedAt %s)",
				inst, st, started, want, startedAt[want.ContainerID])
		}
	}
	if n := len(b.HostContainers()); n != 3 {
		t.Errorf("%d containers for host %s, want the same 3", n, host)
	}
	Eventually(t, 20*time.Second, "exp one and exp-two answer", func() bool {
		return HTTPGet(list[0].Ports[0].HostPort, "/") == "exp-one" && HTTPGet(port2, "/") == "exp-two"
	})
	b.Stop()

	// PostgreSQL -> a fresh SQLite: the round trip loses nothing either.
	final := filepath.Join(dir, "final-pg.json")
	if _, stderr, code := dtmaCLI(t, pgEnv, "registry", "export", "--output", final); code != 0 {
		t.Fatalf("export from PostgreSQL: exit %d\n%s", code, stderr)
	}
	finalPG := xiRead(t, final)
	freshEnv := []string{"DTMA_DATA_DIR=" + filepath.Join(dir, "fresh-sqlite"), "DTMA_HOST_ID=" + host}
	out, stderr, code = dtmaCLI(t, freshEnv, "registry", "import", final)
	if code != 0 || strings.TrimSpace(out) != "imported 3, unchanged 0" {
		t.Fatalf("import into a fresh SQLite: exit %d, %q\n%s", code, out, stderr)
	}
	back, stderr, code := dtmaCLI(t, freshEnv, "registry", "export")
	if code != 0 {
		t.Fatalf("export from the fresh SQLite (stdout): exit %d\n%s", code, stderr)
	}
	backFile := filepath.Join(dir, "back.json")
	if err := os.WriteFile(backFile, []byte(back), 0o600); err != nil {
		t.Fatal(err)
	}
	xiSame(t, "fresh SQLite export vs PostgreSQL export", xiRead(t, backFile), finalPG)
	if _, err := os.Stat(filepath.Join(dir, "fresh-sqlite", "dtma.db")); err != nil {
		t.Errorf("the fresh SQLite registry is not where DTMA_DATA_DIR says: %v", err)
	}
}
