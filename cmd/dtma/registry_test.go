package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/sqlite"
)

const testHost = "cli-host-1"

// registryEnv is the environment selecting the SQLite registry of dataDir
// for host.
func registryEnv(dataDir, host string) map[string]string {
	return map[string]string{"DTMA_DATA_DIR": dataDir, "DTMA_HOST_ID": host}
}

// seedSQLite creates dataDir/dtma.db for host with three instances whose
// fields vary: spec env and ports, account id or none, running with
// observed state, stopped with an exit code and a last error, an operation
// in progress.
func seedSQLite(t *testing.T, dataDir, host string) []*dtma.Instance {
	t.Helper()
	ctx := context.Background()
	reg, err := sqlite.Open(ctx, filepath.Join(dataDir, "dtma.db"), host)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	a := registrytest.NewInstance("alpha one")
	a.Status, a.PendingOp = dtma.StatusRunning, dtma.OpNone
	a.Observed = dtma.Observed{DockerStatus: dtma.DockerRunning, ContainerID: strings.Repeat("a1", 32),
		StartedAt: time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC), RestartCount: 2}

	b := registrytest.NewInstance("beta")
	b.AccountToolInstanceID = ""
	b.Spec = dtma.Spec{Image: "ghcr.io/acme/beta:2"}
	b.SpecHash = b.Spec.Hash()
	b.Ports = nil
	b.DesiredState, b.Status, b.PendingOp = dtma.DesiredStopped, dtma.StatusStopped, dtma.OpNone
	b.LastError = "stop beta: timed out"
	b.Observed = dtma.Observed{DockerStatus: dtma.DockerExited, ContainerID: strings.Repeat("b2", 32),
		StartedAt: time.Date(2025, 1, 1, 0, 0, 0, 1000, time.UTC), FinishedAt: time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC), ExitCode: 137}

	c := registrytest.NewInstance("gamma")
	c.Tracking = dtma.TrackContainerID
	c.Observed = dtma.Observed{DockerStatus: dtma.DockerCreated, ContainerID: strings.Repeat("c3", 32)}

	for i, inst := range []*dtma.Instance{a, b, c} {
		inst.CreatedAt = time.Date(2025, 2, 1, 0, 0, i, 123000, time.UTC)
		if err := reg.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("seed %s: %v", inst.Name, err)
		}
	}
	rows, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil || len(rows) != 3 {
		t.Fatalf("seeded rows: %d, %v", len(rows), err)
	}
	return rows
}

// readExport parses an export and fails the test when it is not one.
func readExport(t *testing.T, data []byte) exportFile {
	t.Helper()
	var f exportFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("export is not JSON: %v\n%s", err, data)
	}
	if f.Format != exportFormat {
		t.Fatalf("export format %q, want %q", f.Format, exportFormat)
	}
	return f
}

// exportOf runs `dtma registry export` on the registry env selects.
func exportOf(t *testing.T, env map[string]string) exportFile {
	t.Helper()
	out, _, err := runCLI(t, env, "registry", "export")
	if err != nil {
		t.Fatalf("registry export: %v", err)
	}
	return readExport(t, []byte(out))
}

// sameRows compares two exports' instances in their stored form
// (dtma.StoredForm: empty collections and time zones aside), as import does.
func sameRows(t *testing.T, what string, got, want []exportInstance) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d instances, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := dtma.StoredForm(fromExport(got[i])), dtma.StoredForm(fromExport(want[i]))
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: instance %d differs:\n got %+v\nwant %+v", what, i, g, w)
		}
	}
}

func writeExport(t *testing.T, f exportFile) string {
	t.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "export.json", string(data))
}

func TestRegistryExport(t *testing.T) {
	dir := t.TempDir()
	seeded := seedSQLite(t, dir, testHost)
	env := registryEnv(dir, testHost)

	out, stderr, err := runCLI(t, env, "registry", "export")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	f := readExport(t, []byte(out))
	if f.HostID != testHost || f.ExportedAt.IsZero() || time.Since(f.ExportedAt) > time.Hour {
		t.Errorf("export header: host %q exported_at %v", f.HostID, f.ExportedAt)
	}
	want := make([]exportInstance, len(seeded))
	for i, inst := range seeded {
		want[i] = toExport(inst)
	}
	sameRows(t, "export", f.Instances, want)
	// Every stored field is present, env values included (the export is
	// what recreates containers), with exact times.
	if f.Instances[0].Spec.Env["API_KEY"] != seeded[0].Spec.Env["API_KEY"] || f.Instances[0].Spec.Env["API_KEY"] == "" {
		t.Error("export lost env values")
	}
	if !f.Instances[0].Observed.StartedAt.Equal(time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC)) ||
		f.Instances[1].Observed.ExitCode != 137 || f.Instances[1].LastError != "stop beta: timed out" ||
		f.Instances[2].Tracking != dtma.TrackContainerID || f.Instances[2].PendingOp != dtma.OpDeploy {
		t.Errorf("export lost fields: %+v", f.Instances)
	}
	if !strings.Contains(stderr, "exported 3 instances of host "+testHost) {
		t.Errorf("stderr = %q", stderr)
	}

	// --output writes the same rows to a file only its owner can read.
	path := filepath.Join(t.TempDir(), "out.json")
	out, _, err = runCLI(t, env, "registry", "export", "--output", path)
	if err != nil {
		t.Fatalf("export --output: %v", err)
	}
	if out != "" {
		t.Errorf("export --output also wrote to stdout: %q", out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	sameRows(t, "export --output", readExport(t, data).Instances, f.Instances)

	// Another host's export of the same file holds none of these rows.
	other := exportOf(t, registryEnv(dir, "cli-host-2"))
	if other.HostID != "cli-host-2" || len(other.Instances) != 0 {
		t.Errorf("export for another host: host %q, %d instances; want none", other.HostID, len(other.Instances))
	}
}

// Import into an empty registry, then again (idempotent), then exports of
// both registries agree field by field.
func TestRegistryImportRoundTrip(t *testing.T) {
	src := t.TempDir()
	seedSQLite(t, src, testHost)
	orig := exportOf(t, registryEnv(src, testHost))
	file := writeExport(t, orig)

	dst := t.TempDir()
	env := registryEnv(dst, testHost)
	out, _, err := runCLI(t, env, "registry", "import", file)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if strings.TrimSpace(out) != "imported 3, unchanged 0" {
		t.Errorf("first import said %q", out)
	}
	sameRows(t, "after import", exportOf(t, env).Instances, orig.Instances)

	out, stderr, err := runCLI(t, env, "registry", "import", file)
	if err != nil {
		t.Fatalf("second import: %v", err)
	}
	if strings.TrimSpace(out) != "imported 0, unchanged 3" || strings.Contains(stderr, "conflict") {
		t.Errorf("second import said %q (stderr %q), want imported 0, unchanged 3", out, stderr)
	}
	sameRows(t, "after second import", exportOf(t, env).Instances, orig.Instances)

	// Importing into the source itself changes nothing either.
	out, _, err = runCLI(t, registryEnv(src, testHost), "registry", "import", file)
	if err != nil || strings.TrimSpace(out) != "imported 0, unchanged 3" {
		t.Errorf("import into the source: %q, %v", out, err)
	}
}

// Conflicting rows are listed on stderr, the exit code is 2 and nothing is
// written — not even the rows that would not conflict.
func TestRegistryImportConflicts(t *testing.T) {
	src := t.TempDir()
	seedSQLite(t, src, testHost)
	orig := exportOf(t, registryEnv(src, testHost))

	dst := t.TempDir()
	env := registryEnv(dst, testHost)
	if _, _, err := runCLI(t, env, "registry", "import", writeExport(t, orig)); err != nil {
		t.Fatalf("import: %v", err)
	}
	before := exportOf(t, env)

	fresh := registrytest.NewInstance("delta")
	fresh.ID, fresh.HostID = dtma.NewUUID(), testHost
	newRow := toExport(fresh)

	cases := []struct {
		name   string
		modify func(f *exportFile)
		want   []string // stderr lines
	}{
		{"same id other name", func(f *exportFile) {
			f.Instances[0].Name = "renamed"
		}, []string{"conflict: renamed: id " + orig.Instances[0].ID + " exists with other content"}},
		{"same id other env value", func(f *exportFile) {
			f.Instances[0].Spec.Env = map[string]string{"API_KEY": "other"}
		}, []string{"conflict: alpha one: id " + orig.Instances[0].ID + " exists with other content"}},
		{"new id, name in use", func(f *exportFile) {
			r := newRow
			r.Name = "beta"
			f.Instances = append(f.Instances, r)
		}, []string{`conflict: name: "beta" is already used on host ` + testHost}},
		{"new id, container name in use", func(f *exportFile) {
			r := newRow
			r.ContainerName = orig.Instances[2].ContainerName
			f.Instances = append(f.Instances, r)
		}, []string{`conflict: container_name: "` + orig.Instances[2].ContainerName + `" is already used on host ` + testHost}},
		{"new id, account id in use", func(f *exportFile) {
			r := newRow
			r.AccountToolInstanceID = orig.Instances[0].AccountToolInstanceID
			f.Instances = append(f.Instances, r)
		}, []string{`conflict: account_tool_instance_id: "` + orig.Instances[0].AccountToolInstanceID + `" is already used on host ` + testHost}},
		{"valid new row beside a conflict", func(f *exportFile) {
			f.Instances[1].DesiredState = dtma.DesiredRunning
			f.Instances = append(f.Instances, newRow)
		}, []string{"conflict: beta: id " + orig.Instances[1].ID + " exists with other content"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := readExport(t, mustJSON(t, orig)) // deep copy
			tc.modify(&f)
			out, stderr, err := runCLI(t, env, "registry", "import", writeExport(t, f))
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("import: err %v (exit %d), want exit 2\nstdout %q\nstderr %q", err, exitCode(err), out, stderr)
			}
			if !strings.Contains(err.Error(), "nothing written") {
				t.Errorf("error %q does not say nothing was written", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w+"\n") {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(out, "imported") {
				t.Errorf("refused import printed %q", out)
			}
			sameRows(t, "after refused import", exportOf(t, env).Instances, before.Instances)
		})
	}
}

// Rows of the file that clash among themselves are refused too: the batch
// is one transaction, so nothing is written.
func TestRegistryImportConflictsWithinFile(t *testing.T) {
	a := registrytest.NewInstance("dup")
	a.ID, a.HostID = dtma.NewUUID(), testHost
	b := registrytest.NewInstance("dup")
	b.ID, b.HostID = dtma.NewUUID(), testHost
	f := exportFile{Format: exportFormat, HostID: testHost, Instances: []exportInstance{toExport(a), toExport(b)}}

	env := registryEnv(t.TempDir(), testHost)
	_, stderr, err := runCLI(t, env, "registry", "import", writeExport(t, f))
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("import of two rows named dup: err %v (exit %d), want exit 2; stderr %q", err, exitCode(err), stderr)
	}
	if !strings.Contains(stderr, "conflict: ") || !strings.Contains(stderr, "is already used") {
		t.Errorf("stderr does not report the clash: %q", stderr)
	}
	if got := exportOf(t, env); len(got.Instances) != 0 {
		t.Errorf("refused import wrote %d rows", len(got.Instances))
	}
}

// An export of one host cannot be imported as another: the report says
// which host to set.
func TestRegistryImportWrongHost(t *testing.T) {
	src := t.TempDir()
	seedSQLite(t, src, testHost)
	file := writeExport(t, exportOf(t, registryEnv(src, testHost)))

	env := registryEnv(t.TempDir(), "cli-host-other")
	_, stderr, err := runCLI(t, env, "registry", "import", file)
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("import as another host: err %v (exit %d), want exit 2", err, exitCode(err))
	}
	want := "conflict: alpha one: belongs to host " + testHost + ", this registry is host cli-host-other (set DTMA_HOST_ID)"
	if !strings.Contains(stderr, want) || strings.Count(stderr, "conflict:") != 3 {
		t.Errorf("stderr:\n%s\nwant three conflicts like %q", stderr, want)
	}
	if got := exportOf(t, env); len(got.Instances) != 0 {
		t.Errorf("refused import wrote %d rows", len(got.Instances))
	}
}

func TestRegistryImportBadFiles(t *testing.T) {
	env := registryEnv(t.TempDir(), testHost)
	cases := []struct {
		name, content, want string
	}{
		{"not JSON", "instances: []", "not a DTMA registry export"},
		{"wrong format", `{"format": "dtma-registry/v9", "instances": []}`, `format "dtma-registry/v9" is not "dtma-registry/v1"`},
		{"no format", `{"instances": []}`, `format "" is not`},
	}
	for _, tc := range cases {
		_, _, err := runCLI(t, env, "registry", "import", writeFile(t, "f.json", tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 1 {
			t.Errorf("%s: err %v (exit %d), want %q with exit 1", tc.name, err, exitCode(err), tc.want)
		}
	}
	if _, _, err := runCLI(t, env, "registry", "import", filepath.Join(t.TempDir(), "absent.json")); err == nil {
		t.Error("import of a missing file: no error")
	}
	if _, _, err := runCLI(t, env, "registry", "import"); err == nil {
		t.Error("import without a file: no error")
	}
	// A registry URL of an unknown kind is refused, naming the flag.
	bad := map[string]string{"DTMA_REGISTRY_URL": "mysql://x", "DTMA_HOST_ID": testHost, "DTMA_DATA_DIR": t.TempDir()}
	if _, _, err := runCLI(t, bad, "registry", "export"); err == nil || !strings.Contains(err.Error(), "--registry-url") {
		t.Errorf("mysql:// registry: err = %v, want one naming --registry-url", err)
	}
	// An empty registry exports an empty list, not null.
	out, _, err := runCLI(t, env, "registry", "export")
	if err != nil || !strings.Contains(out, `"instances": []`) {
		t.Errorf("empty export: %v\n%s", err, out)
	}
}

// The registry commands read the same settings as serve: a sqlite:// URL
// and the flags work like DTMA_DATA_DIR.
func TestRegistrySettings(t *testing.T) {
	dir := t.TempDir()
	seedSQLite(t, dir, testHost)
	url := "sqlite://" + filepath.Join(dir, "dtma.db")
	viaURL := exportOf(t, map[string]string{"DTMA_REGISTRY_URL": url, "DTMA_HOST_ID": testHost, "DTMA_DATA_DIR": t.TempDir()})
	if len(viaURL.Instances) != 3 {
		t.Errorf("sqlite:// URL: %d instances, want 3", len(viaURL.Instances))
	}
	out, _, err := runCLI(t, map[string]string{"DTMA_DATA_DIR": t.TempDir(), "DTMA_HOST_ID": "nobody"},
		"registry", "export", "--data-dir", dir, "--host-id", testHost)
	if err != nil {
		t.Fatal(err)
	}
	if f := readExport(t, []byte(out)); len(f.Instances) != 3 || f.HostID != testHost {
		t.Errorf("flags: host %q, %d instances; want %s and 3", f.HostID, len(f.Instances), testHost)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Rows a registry would refuse are reported before anything is written:
// an import is never left half-done by its second row.
func TestRegistryImportInvalidRows(t *testing.T) {
	valid := registrytest.NewInstance("valid-row")
	valid.ID, valid.HostID = dtma.NewUUID(), testHost
	cases := []struct {
		name   string
		modify func(e *exportInstance)
		want   string
	}{
		{"id not a UUID", func(e *exportInstance) { e.ID = "row-7" }, `conflict: row 2 ("bad"): invalid: id must be a UUID`},
		{"account id not a UUID", func(e *exportInstance) { e.AccountToolInstanceID = "acct-7" }, `conflict: row 2 ("bad"): invalid: account_tool_instance_id must be a UUID`},
		{"empty name", func(e *exportInstance) { e.Name = "" }, `conflict: row 2 (""): invalid: name must not be empty`},
		{"empty container name", func(e *exportInstance) { e.ContainerName = " " }, `conflict: row 2 ("bad"): invalid: container_name must not be empty`},
		{"empty image", func(e *exportInstance) { e.Spec.Image = "" }, `conflict: row 2 ("bad"): invalid: spec.image must not be empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := registrytest.NewInstance("bad")
			bad.ID, bad.HostID = dtma.NewUUID(), testHost
			e := toExport(bad)
			tc.modify(&e)
			f := exportFile{Format: exportFormat, HostID: testHost, Instances: []exportInstance{toExport(valid), e}}
			env := registryEnv(t.TempDir(), testHost)
			out, stderr, err := runCLI(t, env, "registry", "import", writeExport(t, f))
			if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "nothing written") {
				t.Fatalf("import: err %v (exit %d), want exit 2 and nothing written; stdout %q", err, exitCode(err), out)
			}
			if !strings.Contains(stderr, tc.want+"\n") {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
			if got := exportOf(t, env); len(got.Instances) != 0 {
				t.Errorf("refused import wrote %d rows", len(got.Instances))
			}
		})
	}
}
