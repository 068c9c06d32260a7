package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadMappingJSON(t *testing.T) {
	path := writeFile(t, "map.json", `
  [
    {"account_tool_instance_id": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "instance_name_on_toolbox": "tool one", "docker_image_url": "ghcr.io/acme/one:1"},
    {"instance_name_on_toolbox": "tool-two", "docker_image_url": "ghcr.io/acme/two:2", "extra": "ignored"}
  ]`)
	got, err := readMapping(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []mappingEntry{
		{AccountToolInstanceID: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", InstanceNameOnToolbox: "tool one", DockerImageURL: "ghcr.io/acme/one:1"},
		{InstanceNameOnToolbox: "tool-two", DockerImageURL: "ghcr.io/acme/two:2"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("readMapping = %+v, want %+v", got, want)
	}
	if got, err := readMapping(writeFile(t, "empty.json", "[]")); err != nil || len(got) != 0 {
		t.Errorf("empty array: %v, %v", got, err)
	}
}

func TestReadMappingCSV(t *testing.T) {
	// Columns in any order, any case, spaces around values, quoted fields.
	path := writeFile(t, "map.csv", "Docker_Image_URL, instance_name_on_toolbox ,account_tool_instance_id\n"+
		"ghcr.io/acme/one:1, tool one , AAAAAAAA-aaaa-4aaa-8aaa-aaaaaaaaaaaa\n"+
		"\"ghcr.io/acme/two:2\",\"tool, two\",\n")
	got, err := readMapping(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []mappingEntry{
		{AccountToolInstanceID: "AAAAAAAA-aaaa-4aaa-8aaa-aaaaaaaaaaaa", InstanceNameOnToolbox: "tool one", DockerImageURL: "ghcr.io/acme/one:1"},
		{InstanceNameOnToolbox: "tool, two", DockerImageURL: "ghcr.io/acme/two:2"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("readMapping = %+v, want %+v", got, want)
	}
}

func TestReadMappingErrors(t *testing.T) {
	cases := []struct {
		name, file, content string
		want                []string // substrings of the error
	}{
		{"missing file", "", "", []string{"--mapping", "no such file"}},
		{"bad JSON", "m.json", `[{"instance_name_on_toolbox": "x",}]`, []string{"--mapping", "not a JSON array of entries"}},
		{"JSON array of numbers", "m.json", `[1, 2]`, []string{"not a JSON array of entries"}},
		{"JSON entry without name", "m.json", `[{"instance_name_on_toolbox": "ok", "docker_image_url": "x:1"}, {"docker_image_url": "x:1"}]`, []string{"entry 2", "instance_name_on_toolbox is required"}},
		{"JSON entry without image", "m.json", `[{"instance_name_on_toolbox": "ok", "docker_image_url": "x:1"}, {"instance_name_on_toolbox": "two"}]`, []string{"entry 2 (two)", "docker_image_url is required"}},
		{"CSV without name column", "m.csv", "account_tool_instance_id,docker_image_url\na,b\n", []string{"CSV header lacks column instance_name_on_toolbox"}},
		{"CSV without image column", "m.csv", "instance_name_on_toolbox,account_tool_instance_id\na,b\n", []string{"lacks column docker_image_url"}},
		{"CSV short line", "m.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\na,,x:1\nb,x:1\n", []string{"CSV line 3"}},
		{"CSV bad quote", "m.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\n\"a,,x:1\n", []string{"CSV line"}},
		{"CSV blank name", "m.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\n  ,,x:1\n", []string{"entry 1", "instance_name_on_toolbox is required"}},
		{"empty file", "m.csv", "", []string{"CSV header"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "absent.json")
			if tc.file != "" {
				path = writeFile(t, tc.file, tc.content)
			}
			_, err := readMapping(path)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// migrate asks the agent to adopt every entry, prints a line per entry and
// a summary, and exits 2 when any entry was not migrated.
func TestMigrateCommand(t *testing.T) {
	f := newFakeAgent(t)
	var bodies []map[string]any
	f.mu.Lock()
	f.routes["POST /v1/adopt"] = func(w http.ResponseWriter, body []byte) {
		var req map[string]any
		_ = json.Unmarshal(body, &req)
		bodies = append(bodies, req)
		switch req["name"] {
		case "one":
			writeTestJSON(w, 200, map[string]any{"action": "adopt", "dry_run": req["dry_run"], "instance": map[string]any{
				"name": "one", "container_name": "one", "container_id": "0123456789abcdef0123"}})
		case "two":
			writeTestJSON(w, 200, map[string]any{"action": "unchanged", "instance": map[string]any{"name": "two", "container_name": "two", "container_id": "aa"}})
		case "three":
			writeTestJSON(w, 200, map[string]any{"action": "skip", "reason": "no container named three"})
		default:
			writeTestJSON(w, 400, map[string]any{"error": map[string]any{"code": "invalid", "message": "image: bad reference"}})
		}
	}
	f.mu.Unlock()

	all := writeFile(t, "map.json", `[
		{"account_tool_instance_id": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "instance_name_on_toolbox": "one", "docker_image_url": "img:1"},
		{"instance_name_on_toolbox": "two", "docker_image_url": "img:2"},
		{"instance_name_on_toolbox": "three", "docker_image_url": "img:3"},
		{"instance_name_on_toolbox": "four", "docker_image_url": "BAD"}]`)
	out, _, err := runCLI(t, f.env(), "migrate", "--mapping", all)
	if err == nil || exitCode(err) != 2 {
		t.Fatalf("migrate with a skip and an error: err %v (exit %d), want exit 2\n%s", err, exitCode(err), out)
	}
	if !strings.Contains(err.Error(), "2 of 4 entries were not migrated") {
		t.Errorf("error = %q", err)
	}
	rows := tableRows(out)
	if len(rows) != 6 || rows[0][0] != "NAME" {
		t.Fatalf("output:\n%s\nwant a header, 4 entries and a summary", out)
	}
	checks := []struct {
		row    int
		action string
		detail string
	}{
		{1, "adopt", "container one (0123456789ab)"},
		{2, "unchanged", "container two (aa)"},
		{3, "skip", "no container named three"},
		{4, "error", "invalid (400): image: bad reference"},
	}
	for _, c := range checks {
		line := strings.Join(rows[c.row], "|")
		if !strings.Contains(line, "|"+c.action+"|") || !strings.HasSuffix(line, c.detail) {
			t.Errorf("row %d = %q, want action %s and detail %q", c.row, rows[c.row], c.action, c.detail)
		}
	}
	if got := strings.Join(rows[5], " "); got != "adopted 1, unchanged 1, skipped 1, errors 1" {
		t.Errorf("summary = %q", got)
	}
	if len(bodies) != 4 || bodies[0]["account_tool_instance_id"] != "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" ||
		bodies[0]["image"] != "img:1" || bodies[0]["dry_run"] != false {
		t.Errorf("adopt requests = %v", bodies)
	}

	// Dry run: said as "would adopt", the request says dry_run; exit 0 when
	// everything would be migrated.
	bodies = nil
	ok := writeFile(t, "ok.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\none,,img:1\ntwo,,img:2\n")
	out, _, err = runCLI(t, f.env(), "migrate", "--mapping", ok, "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "would adopt") || !strings.Contains(out, "would adopt 1, unchanged 1, skipped 0, errors 0") {
		t.Errorf("dry-run output:\n%s", out)
	}
	if len(bodies) != 2 || bodies[0]["dry_run"] != true {
		t.Errorf("dry-run requests = %v", bodies)
	}

	// Bad invocations fail before any request.
	n := len(f.requests())
	if _, _, err := runCLI(t, f.env(), "migrate"); err == nil || !strings.Contains(err.Error(), "--mapping is required") {
		t.Errorf("no --mapping: err = %v", err)
	}
	bad := writeFile(t, "bad.csv", "name,image\nx,y\n")
	if _, _, err := runCLI(t, f.env(), "migrate", "--mapping", bad); err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "lacks column") {
		t.Errorf("bad mapping: err = %v (exit %d), want a CSV header error with exit 1", err, exitCode(err))
	}
	noImage := writeFile(t, "noimage.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\none,,img:1\ntwo,,\n")
	if _, _, err := runCLI(t, f.env(), "migrate", "--mapping", noImage); err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "docker_image_url is required") {
		t.Errorf("entry without an image: err = %v (exit %d), want exit 1 naming docker_image_url", err, exitCode(err))
	}
	if got := len(f.requests()); got != n {
		t.Errorf("bad invocations sent %d requests", got-n)
	}
}

// An agent that refuses adoption (DTMA_ADOPT) stops the run at the first
// answer, with exit code 1 and the agent's reason; no further entry is sent.
func TestMigrateAdoptionRefused(t *testing.T) {
	f := newFakeAgent(t)
	calls := 0
	f.mu.Lock()
	f.routes["POST /v1/adopt"] = func(w http.ResponseWriter, body []byte) {
		calls++
		writeTestJSON(w, 403, map[string]any{"error": map[string]any{"code": "forbidden", "message": "adoption is only served to loopback peers (DTMA_ADOPT=loopback)"}})
	}
	f.mu.Unlock()
	m := writeFile(t, "m.csv", "instance_name_on_toolbox,account_tool_instance_id,docker_image_url\none,,img:1\ntwo,,img:2\n")
	_, _, err := runCLI(t, f.env(), "migrate", "--mapping", m)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "DTMA_ADOPT") {
		t.Fatalf("refused adoption: err = %v (exit %d), want exit 1 with the agent's reason", err, exitCode(err))
	}
	if calls != 1 {
		t.Errorf("%d adopt requests after a refusal, want 1", calls)
	}
}
