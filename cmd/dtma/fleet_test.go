package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func fleetInstances() []map[string]any {
	list := testInstances("host-a")
	other := testInstances("host-b")[0]
	other["id"] = "44444444-4444-4444-8444-444444444444"
	other["container_id"] = "abcdefabcdef0000"
	return append(list, other)
}

func TestFleetLsTable(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/fleet/instances", 200, map[string]any{"instances": fleetInstances()})
	out, _, err := runCLI(t, f.env(), "fleet", "ls")
	if err != nil {
		t.Fatalf("dtma fleet ls: %v", err)
	}
	rows := tableRows(out)
	wantHeader := []string{"HOST", "NAME", "ACCOUNT TOOL INSTANCE", "CONTAINER", "IMAGE", "STATUS", "DOCKER", "PORTS"}
	if len(rows) != 4 || strings.Join(rows[0], "|") != strings.Join(wantHeader, "|") {
		t.Fatalf("table:\n%s\nwant header %q and 3 rows", out, wantHeader)
	}
	for i, want := range [][2]string{{"host-a", "alpha"}, {"host-a", "beta tool"}, {"host-b", "alpha"}} {
		if rows[i+1][0] != want[0] || rows[i+1][1] != want[1] {
			t.Errorf("row %d = %q, want host %s name %s", i+1, rows[i+1], want[0], want[1])
		}
	}
	if rows[3][2] != "abcdefabcdef" {
		t.Errorf("host-b row container = %q, want the short id abcdefabcdef", rows[3][2])
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/fleet/instances" || reqs[0].Auth != "Bearer "+fakeToken {
		t.Errorf("requests = %+v, want one authenticated GET /v1/fleet/instances", reqs)
	}
}

func TestFleetLsJSONFormatQuiet(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/fleet/instances", 200, map[string]any{"instances": fleetInstances()})

	out, _, err := runCLI(t, f.env(), "fleet", "list", "-o", "json")
	if err != nil {
		t.Fatalf("fleet ls -o json: %v", err)
	}
	var got []instanceRow
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("-o json output is not a JSON array: %v\n%s", err, out)
	}
	if len(got) != 3 || got[0].HostID != "host-a" || got[2].HostID != "host-b" || got[2].ID != "44444444-4444-4444-8444-444444444444" {
		t.Errorf("-o json = %+v", got)
	}

	out, _, err = runCLI(t, f.env(), "fleet", "ls", "--format", "{{.HostID}}/{{.Name}}")
	if err != nil {
		t.Fatalf("--format: %v", err)
	}
	if out != "host-a/alpha\nhost-a/beta tool\nhost-b/alpha\n" {
		t.Errorf("--format output = %q", out)
	}

	out, _, err = runCLI(t, f.env(), "fleet", "ls", "-q")
	if err != nil {
		t.Fatalf("-q: %v", err)
	}
	if out != "alpha\nbeta tool\nalpha\n" {
		t.Errorf("-q output = %q", out)
	}
}

func TestFleetLsErrors(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/fleet/instances", 503, map[string]any{"error": map[string]any{"code": "unavailable", "message": "list fleet: registry unavailable"}})
	_, _, err := runCLI(t, f.env(), "fleet", "ls")
	if err == nil || !strings.Contains(err.Error(), "unavailable (503)") {
		t.Errorf("503: err = %v, want unavailable (503)", err)
	}
	_, _, err = runCLI(t, map[string]string{"DTMA_URL": f.srv.URL}, "fleet", "ls")
	if err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("no token: err = %v", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("agent saw %d requests, want 1 (none without a token)", n)
	}
	// --url wins over DTMA_URL.
	env := f.env()
	env["DTMA_URL"] = "http://127.0.0.1:1"
	f.handle("GET", "/v1/fleet/instances", 200, map[string]any{"instances": []any{}})
	out, _, err := runCLI(t, env, "fleet", "ls", "--url", f.srv.URL, "-o", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("--url: out %q err %v, want [] from the fake agent", out, err)
	}
}
