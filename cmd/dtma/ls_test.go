package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeAgent stands in for a running agent on 127.0.0.1: it answers the
// routes it was given and records the requests it saw.
type fakeAgent struct {
	srv    *httptest.Server
	mu     sync.Mutex
	routes map[string]func(w http.ResponseWriter, body []byte)
	seen   []seenRequest
}

type seenRequest struct {
	Method, Path, Auth string
	Body               []byte
}

const fakeToken = "cli-test-token"

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	f := &fakeAgent{routes: map[string]func(http.ResponseWriter, []byte){}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.seen = append(f.seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), body})
		h := f.routes[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			writeTestJSON(w, 403, map[string]any{"error": map[string]any{"code": "forbidden", "message": "invalid token"}})
			return
		}
		if h == nil {
			writeTestJSON(w, 404, map[string]any{"error": map[string]any{"code": "not_found", "message": "no route"}})
			return
		}
		h(w, body)
	}))
	t.Cleanup(f.srv.Close)
	if !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test agent listens on %s, want 127.0.0.1", f.srv.URL)
	}
	return f
}

// handle answers method+path with status and v as JSON.
func (f *fakeAgent) handle(method, path string, status int, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[method+" "+path] = func(w http.ResponseWriter, _ []byte) { writeTestJSON(w, status, v) }
}

func (f *fakeAgent) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

// env is the client environment pointing at the fake agent.
func (f *fakeAgent) env() map[string]string {
	return map[string]string{"DTMA_URL": f.srv.URL, "DTMA_TOKEN": fakeToken}
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// testInstances is what the fake agent lists: one plain running instance,
// one with an account id, two ports and drift.
func testInstances(host string) []map[string]any {
	return []map[string]any{
		{
			"id": "11111111-1111-4111-8111-111111111111", "host_id": host, "name": "alpha",
			"account_tool_instance_id": nil, "container_name": "alpha",
			"container_id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"image":        "ghcr.io/acme/alpha:1", "desired_state": "running",
			"dtma_status": "running", "docker_status": "running", "drift": false,
			"ports": []map[string]any{{"container_port": 8080, "protocol": "tcp", "host_port": 31001, "host_ip": "127.0.0.1"}},
		},
		{
			"id": "22222222-2222-4222-8222-222222222222", "host_id": host, "name": "beta tool",
			"account_tool_instance_id": "33333333-3333-4333-8333-333333333333", "container_name": "beta-tool",
			"container_id": "fedcba9876543210", "image": "ghcr.io/acme/beta:2", "desired_state": "running",
			"dtma_status": "running", "docker_status": "exited", "drift": true,
			"ports": []map[string]any{
				{"container_port": 8080, "protocol": "tcp", "host_port": 31002, "host_ip": ""},
				{"container_port": 53, "protocol": "udp", "host_port": 31053, "host_ip": "127.0.0.1"},
			},
		},
	}
}

// tableRows splits table output into rows of whitespace-separated cells
// (cells are separated by at least 3 spaces).
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var cells []string
		for _, c := range strings.Split(line, "   ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		rows = append(rows, cells)
	}
	return rows
}

func TestLsTable(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/instances", 200, map[string]any{"instances": testInstances("h1")})
	out, _, err := runCLI(t, f.env(), "ls")
	if err != nil {
		t.Fatalf("dtma ls: %v", err)
	}
	rows := tableRows(out)
	wantHeader := []string{"NAME", "ACCOUNT TOOL INSTANCE", "CONTAINER", "IMAGE", "STATUS", "DOCKER", "PORTS"}
	if len(rows) != 3 || strings.Join(rows[0], "|") != strings.Join(wantHeader, "|") {
		t.Fatalf("table:\n%s\nwant header %q and 2 rows", out, wantHeader)
	}
	// alpha has no account id: its row has one cell fewer.
	wantAlpha := []string{"alpha", "0123456789ab", "ghcr.io/acme/alpha:1", "running", "running", "127.0.0.1:31001->8080/tcp"}
	if strings.Join(rows[1], "|") != strings.Join(wantAlpha, "|") {
		t.Errorf("alpha row = %q, want %q", rows[1], wantAlpha)
	}
	wantBeta := []string{"beta tool", "33333333-3333-4333-8333-333333333333", "fedcba987654", "ghcr.io/acme/beta:2",
		"running (drift)", "exited", "0.0.0.0:31002->8080/tcp, 127.0.0.1:31053->53/udp"}
	if strings.Join(rows[2], "|") != strings.Join(wantBeta, "|") {
		t.Errorf("beta row = %q, want %q", rows[2], wantBeta)
	}
	// Columns line up: every row's STATUS cell starts where the header's does.
	lines := strings.Split(out, "\n")
	col := strings.Index(lines[0], "STATUS")
	if !strings.HasPrefix(lines[1][col:], "running") || !strings.HasPrefix(lines[2][col:], "running (drift)") {
		t.Errorf("columns are not aligned:\n%s", out)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Path != "/v1/instances" || reqs[0].Auth != "Bearer "+fakeToken {
		t.Errorf("requests = %+v, want one authenticated GET /v1/instances", reqs)
	}
}

func TestLsJSON(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/instances", 200, map[string]any{"instances": testInstances("h1")})
	out, _, err := runCLI(t, f.env(), "ls", "-o", "json")
	if err != nil {
		t.Fatalf("dtma ls -o json: %v", err)
	}
	var got []instanceRow
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("-o json output is not a JSON array: %v\n%s", err, out)
	}
	if len(got) != 2 || got[0].Name != "alpha" || got[1].Name != "beta tool" {
		t.Fatalf("-o json = %+v", got)
	}
	if got[1].AccountID() != "33333333-3333-4333-8333-333333333333" || !got[1].Drift || got[1].DockerStatus != "exited" ||
		len(got[1].Ports) != 2 || got[1].Ports[1].HostPort != 31053 || got[0].HostID != "h1" {
		t.Errorf("-o json lost fields: %+v", got)
	}

	// No instances: an empty array, not null.
	f.handle("GET", "/v1/instances", 200, map[string]any{"instances": []any{}})
	out, _, err = runCLI(t, f.env(), "ls", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("-o json with no instances = %q, want []", out)
	}
	// The empty table still has its header.
	out, _, err = runCLI(t, f.env(), "ls")
	if err != nil {
		t.Fatal(err)
	}
	if rows := tableRows(out); len(rows) != 1 || rows[0][0] != "NAME" {
		t.Errorf("empty table = %q, want the header only", out)
	}
}

func TestLsFormatAndQuiet(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/instances", 200, map[string]any{"instances": testInstances("h1")})

	out, _, err := runCLI(t, f.env(), "ls", "--format", "{{.Name}}|{{.DTMAStatus}}|{{.DockerStatus}}|{{.AccountID}}|{{.PortsString}}")
	if err != nil {
		t.Fatalf("--format: %v", err)
	}
	want := "alpha|running|running||127.0.0.1:31001->8080/tcp\n" +
		"beta tool|running|exited|33333333-3333-4333-8333-333333333333|0.0.0.0:31002->8080/tcp, 127.0.0.1:31053->53/udp\n"
	if out != want {
		t.Errorf("--format output:\n%q\nwant\n%q", out, want)
	}

	out, _, err = runCLI(t, f.env(), "ps", "-q")
	if err != nil {
		t.Fatalf("ps -q: %v", err)
	}
	if out != "alpha\nbeta tool\n" {
		t.Errorf("-q output = %q, want the names one per line", out)
	}

	if _, _, err := runCLI(t, f.env(), "ls", "--format", "{{.Name"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("bad template: err = %v, want one naming --format", err)
	}
	if _, _, err := runCLI(t, f.env(), "ls", "--format", "{{.NoSuchField}}"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("unknown field: err = %v, want one naming --format", err)
	}
	if _, _, err := runCLI(t, f.env(), "ls", "-o", "yaml"); err == nil || !strings.Contains(err.Error(), "--output") {
		t.Errorf("-o yaml: err = %v, want one naming --output", err)
	}
	if _, _, err := runCLI(t, f.env(), "ls", "extra"); err == nil {
		t.Error("ls with an argument: no error")
	}
}

// The agent's error envelope is shown with its code and HTTP status.
func TestLsAgentErrors(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/instances", 503, map[string]any{"error": map[string]any{"code": "unavailable", "message": "registry unavailable: connection refused"}})
	_, _, err := runCLI(t, f.env(), "ls")
	if err == nil || err.Error() != "unavailable (503): registry unavailable: connection refused" {
		t.Errorf("503: err = %v", err)
	}

	env := f.env()
	env["DTMA_TOKEN"] = "wrong"
	_, _, err = runCLI(t, env, "ls")
	if err == nil || !strings.Contains(err.Error(), "forbidden (403)") {
		t.Errorf("wrong token: err = %v, want forbidden (403)", err)
	}

	// A non-JSON error answer is shown as text.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer plain.Close()
	_, _, err = runCLI(t, map[string]string{"DTMA_URL": plain.URL, "DTMA_TOKEN": fakeToken}, "ls")
	if err == nil || err.Error() != "HTTP 502: bad gateway" {
		t.Errorf("plain 502: err = %v, want HTTP 502: bad gateway", err)
	}

	// Nothing listening: the error names the request.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	_, _, err = runCLI(t, map[string]string{"DTMA_URL": url, "DTMA_TOKEN": fakeToken}, "ls")
	if err == nil || !strings.Contains(err.Error(), "GET /v1/instances") {
		t.Errorf("no agent: err = %v, want one naming GET /v1/instances", err)
	}
}
