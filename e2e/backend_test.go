package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/backendtest"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/client"
)

// The tests in this file replay the platform's backend against the real
// binary, request for request as shared/reference/legacy-dtma-api.md
// ("How the real backend calls the agent") describes them, and read the
// answers the way the backend does.

// backendCall sends a request the way every backend helper does:
// Content-Type: application/json on every method (also on GET, and on
// POST/DELETE without a body) and the bearer token unless token is false.
// path is sent exactly as given (already encoded).
func backendCall(t *testing.T, a *Agent, method, path string, body any, token bool) *Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	u, err := url.Parse(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.RawPath = path
	u.Path, err = url.PathUnescape(path)
	if err != nil {
		t.Fatalf("bad test path %q: %v", path, err)
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.EscapedPath() != path {
		t.Fatalf("request path %q, want it sent as %q", req.URL.EscapedPath(), path)
	}
	req.Header.Set("Content-Type", "application/json")
	if token {
		req.Header.Set("Authorization", "Bearer "+Token)
	}
	resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\nagent log:\n%s", method, path, err, a.Logs())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return &Response{Status: resp.StatusCode, Body: data, Header: resp.Header}
}

// backendOK is the backend helper that calls response.json() on every 2xx:
// it fails the test unless the answer is want and a JSON object.
func backendOK(t *testing.T, a *Agent, want int, method, path string, body any) map[string]any {
	t.Helper()
	r := backendCall(t, a, method, path, body, true)
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", method, path, r.Status, want, r.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s %s: a %d without a JSON body fails the backend's response.json(): %v\n%s", method, path, r.Status, err, r.Body)
	}
	return m
}

// encodeURIComponent is JavaScript's: everything but A-Z a-z 0-9 - _ . ! ~ * ' ( )
// is percent-encoded (a space as %20, "+" as %2B, "/" as %2F).
func encodeURIComponent(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-_.!~*'()", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)+0x100, 16)[1:]))
		}
	}
	return b.String()
}

// pathARef is path A's ref: the name put into the path unencoded, which the
// runtime's URL parser turns into %20 for a space.
func pathARef(name string) string { return strings.ReplaceAll(name, " ", "%20") }

// statusEntry returns the tool_instances entry named name in a /status or
// /tools/status body, checking the fields every entry must have for the
// backend's console (a numeric created on every entry, ports an array).
func statusEntry(t *testing.T, body map[string]any, name string) map[string]any {
	t.Helper()
	list, ok := body["tool_instances"].([]any)
	if !ok {
		t.Fatalf("tool_instances is not a list: %v", body)
	}
	var found map[string]any
	for _, e := range list {
		m, _ := e.(map[string]any)
		if _, ok := m["created"].(float64); !ok {
			t.Errorf("entry %v: created is not a number (the backend's list would be empty)", m["instance_name_on_toolbox"])
		}
		if _, ok := m["ports"].([]any); !ok {
			t.Errorf("entry %v: ports is not an array", m["instance_name_on_toolbox"])
		}
		if m["instance_name_on_toolbox"] == name {
			found = m
		}
	}
	if found == nil {
		t.Fatalf("%q not in tool_instances: %v", name, body)
	}
	return found
}

// publicPort returns the only public_port of a legacy ports list.
func publicPort(t *testing.T, v any) int {
	t.Helper()
	list, _ := v.([]any)
	if len(list) != 1 {
		t.Fatalf("ports %v, want exactly one", v)
	}
	p, _ := list[0].(map[string]any)["public_port"].(float64)
	return int(p)
}

// TestBackendPathB replays the toolbox edge function: every deploy and
// re-deploy hard-codes the agent's own port for 8080/tcp; refs go through
// encodeURIComponent; start is preceded by a token-less GET /status and
// followed, after a 404, by the recovery re-deploy with Env: [] and the
// same port.
func TestBackendPathB(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_PUBLIC_STATUS=true"}})
	own := strconv.Itoa(a.Port)
	body := func(name, acct string, env []string) map[string]any {
		return map[string]any{
			"dockerImageUrl":        img,
			"instanceNameOnToolbox": name,
			"accountToolInstanceId": acct,
			"baseConfigOverrideJson": map[string]any{"Env": env,
				"HostConfig": map[string]any{"PortBindings": map[string]any{"8080/tcp": []map[string]string{{"HostPort": own}}}}},
		}
	}
	sfx := uniqueSuffix()
	tools := []struct{ name, acct, echo string }{
		{"Context7 MCP Server-" + sfx, dtma.NewUUID(), "one-" + sfx},
		{"Gmail+Tool? #2 & co=" + sfx, dtma.NewUUID(), "two-" + sfx},
	}
	ids := map[string]string{}
	ports := map[string]int{}
	for _, tl := range tools {
		m := backendOK(t, a, 201, "POST", "/tools", body(tl.name, tl.acct, []string{"ECHO=" + tl.echo}))
		p := publicPort(t, jget(m, "data.ports"))
		if p == a.Port || p < 20000 {
			t.Fatalf("%s: published on %d; want a port from the agent's range, not its own %d", tl.name, p, a.Port)
		}
		if !Serves(p, "/", tl.echo) {
			t.Fatalf("%s does not serve on its published port %d", tl.name, p)
		}
		ids[tl.name], ports[tl.name] = str(jget(m, "data.container_id")), p
		if jget(m, "data.state") != "running" || jget(m, "data.status") != "running" {
			t.Errorf("deploy answer: %v", m)
		}
	}
	if ports[tools[0].name] == ports[tools[1].name] {
		t.Fatalf("both tools on port %d", ports[tools[0].name])
	}
	// The log says once per instance why the port differs.
	for _, tl := range tools {
		if n := strings.Count(a.Logs(), `"requested host port remapped","instance":`+strconv.Quote(tl.name)); n != 1 {
			t.Errorf("%d remap log lines for %s, want 1", n, tl.name)
		}
	}

	// Every surface shows the real published port and Docker's own id.
	for _, tl := range tools {
		ref := encodeURIComponent(tl.name)
		st := backendOK(t, a, 200, "GET", "/tools/"+ref+"/status", nil)
		if st["status"] != "running" || publicPort(t, jget(st, "data.ports")) != ports[tl.name] || jget(st, "data.container_id") != ids[tl.name] {
			t.Errorf("/tools/%s/status: %v", ref, st)
		}
		v1 := backendOK(t, a, 200, "GET", "/v1/instances/"+ref, nil)
		if vp := jlist(v1, "ports"); len(vp) != 1 || vp[0]["host_port"] != float64(ports[tl.name]) {
			t.Errorf("v1 ports %v, want host_port %d", v1["ports"], ports[tl.name])
		}
		if rp := jlist(v1, "requested_ports"); len(rp) != 1 || rp[0]["host_port"] != float64(a.Port) {
			t.Errorf("v1 requested_ports %v, want the request as sent (%d)", v1["requested_ports"], a.Port)
		}
		ins := a.Inspect(ids[tl.name])
		if ins == nil || ins.Container.ID != ids[tl.name] || len(ids[tl.name]) != 64 {
			t.Errorf("container_id %q is not Docker's full id", ids[tl.name])
		}
	}
	for _, path := range []string{"/status", "/tools/status"} {
		sb := backendOK(t, a, 200, "GET", path, nil)
		for _, tl := range tools {
			e := statusEntry(t, sb, tl.name)
			if publicPort(t, e["ports"]) != ports[tl.name] || e["container_id"] != ids[tl.name] || backendtest.MapStatus(str(e["status"])) != "running" {
				t.Errorf("%s entry %v", path, e)
			}
		}
	}

	// A re-deploy of the same body is idempotent, also after an agent
	// restart: 2xx, same container, same port.
	redeploy := func(when string) {
		for _, tl := range tools {
			m := backendOK(t, a, 200, "POST", "/tools", body(tl.name, tl.acct, []string{"ECHO=" + tl.echo}))
			if jget(m, "data.container_id") != ids[tl.name] || publicPort(t, jget(m, "data.ports")) != ports[tl.name] {
				t.Errorf("re-deploy %s %s: %v", when, tl.name, m)
			}
		}
	}
	redeploy("before a restart")
	a.Restart()
	redeploy("after a restart")

	// Stop, then the start sequence: token-less /status, start.
	one := tools[0]
	ref := encodeURIComponent(one.name)
	m := backendOK(t, a, 200, "POST", "/tools/"+ref+"/stop", nil)
	if jget(m, "data.state") != "exited" || jget(m, "data.status") != "stopped" {
		t.Errorf("stop answer %v", m)
	}
	pub := backendCall(t, a, "GET", "/status", nil, false)
	if pub.Status != 200 {
		t.Fatalf("token-less /status with DTMA_PUBLIC_STATUS=true: %d", pub.Status)
	}
	if e := statusEntry(t, pub.JSON(t), one.name); backendtest.MapStatus(str(e["status"])) != "stopped" || e["state"] != "exited" {
		t.Errorf("a stopped tool shows as %q (backend: %s), want stopped", e["status"], backendtest.MapStatus(str(e["status"])))
	}
	m = backendOK(t, a, 200, "POST", "/tools/"+ref+"/start", nil)
	if jget(m, "data.status") != "running" || !Serves(ports[one.name], "/", one.echo) {
		t.Errorf("start answer %v", m)
	}

	// The recovery path, where the instance really is gone: start 404s,
	// the backend re-deploys with Env: [] and the same port, then starts.
	backendOK(t, a, 200, "DELETE", "/tools/"+ref, nil)
	r := backendCall(t, a, "POST", "/tools/"+ref+"/start", nil, true)
	if r.Status != 404 {
		t.Fatalf("start of a removed tool: %d %s", r.Status, r.Body)
	}
	m = backendOK(t, a, 201, "POST", "/tools", body(one.name, one.acct, []string{}))
	p := publicPort(t, jget(m, "data.ports"))
	m = backendOK(t, a, 200, "POST", "/tools/"+ref+"/start", nil)
	if jget(m, "data.status") != "running" || !Serves(p, "/env/ECHO_VAR", "") || !answers(p) {
		t.Errorf("start after the recovery deploy: %v", m)
	}
	backendOK(t, a, 200, "DELETE", "/tools/"+encodeURIComponent(tools[1].name), nil)
}

// TestBackendPathA replays the tool-instance service: baseConfigOverrideJson
// passed through from the database (null, or with the UI's keys), an
// untagged image, refs put into the path unencoded (a space becomes %20),
// and starts/stops only of tools it holds as stopped/running.
func TestBackendPathA(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	// An untagged reference: tag the test image as <repo>:latest (the tag is
	// this test's own and removed at the end).
	dc := dockertest.Client(t)
	repo := "dtma-test-untagged-" + dockertest.RunID()
	if _, err := dc.ImageTag(context.Background(), client.ImageTagOptions{Source: img, Target: repo + ":latest"}); err != nil {
		t.Fatalf("tag: %v", err)
	}
	t.Cleanup(func() {
		_, _ = dc.ImageRemove(context.Background(), repo+":latest", client.ImageRemoveOptions{})
	})
	a := StartAgent(t, AgentOptions{})
	sfx := uniqueSuffix()
	cases := []struct {
		name     string
		override any
	}{
		{"Null Override " + sfx, nil},
		{"UI Keys " + sfx, map[string]any{"uiPort": 8080, "displayName": "x", "Env": []string{"ECHO=ui"},
			"HostConfig": map[string]any{"Privileged": true, "PortBindings": map[string]any{"8080/tcp": []map[string]string{{"HostPort": ""}}}}}},
		{"Absent Override " + sfx, "absent"},
	}
	for _, c := range cases {
		b := map[string]any{"dockerImageUrl": repo, "instanceNameOnToolbox": c.name, "accountToolInstanceId": dtma.NewUUID()}
		if c.override != "absent" {
			b["baseConfigOverrideJson"] = c.override
		}
		backendCall(t, a, "POST", "/tools", b, true) // path A does not read the answer...
		// ...but the tool must run.
		st := backendOK(t, a, 200, "GET", "/tools/"+pathARef(c.name)+"/status", nil)
		if st["status"] != "running" || jget(st, "data.image") != repo {
			t.Fatalf("%s after deploy: %v", c.name, st)
		}
	}
	if !strings.Contains(a.Logs(), `"keys":["HostConfig.Privileged","displayName","uiPort"]`) {
		t.Errorf("no debug log naming the ignored keys")
	}
	ins := a.Inspect(str(jget(backendOK(t, a, 200, "GET", "/tools/"+pathARef(cases[1].name)+"/status", nil), "data.container_id")))
	if ins == nil || ins.Container.HostConfig.Privileged {
		t.Fatalf("the UI's Privileged key reached Docker")
	}

	// The service stops only what it holds as running, starts only what it
	// holds as stopped: the status it reads must say so.
	held := func(name string) string {
		return backendtest.MapStatus(str(statusEntry(t, backendOK(t, a, 200, "GET", "/status", nil), name)["status"]))
	}
	for _, c := range cases {
		ref := pathARef(c.name)
		if h := held(c.name); h != "running" {
			t.Fatalf("%s held as %s, want running", c.name, h)
		}
		backendOK(t, a, 200, "POST", "/tools/"+ref+"/stop", nil)
		if h := held(c.name); h != "stopped" {
			t.Fatalf("%s held as %s after stop, want stopped", c.name, h)
		}
		backendOK(t, a, 200, "POST", "/tools/"+ref+"/start", nil)
		if h := held(c.name); h != "running" {
			t.Fatalf("%s held as %s after start, want running", c.name, h)
		}
	}
	for _, c := range cases {
		// Path B's style for delete: encodeURIComponent, empty JSON body.
		backendOK(t, a, 200, "DELETE", "/tools/"+encodeURIComponent(c.name), nil)
	}
}

// TestBackendRefEncodings: a name with every character the backend's two
// encodings treat specially resolves through both (raw with %20, and
// encodeURIComponent), "+" always means a plus, and refs that cannot name an
// instance (an encoded "/") answer a JSON 404, never the router's text.
func TestBackendRefEncodings(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	name := "A+B ?x#y&z=1 %41 " + uniqueSuffix()
	acct := dtma.NewUUID()
	backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": EchoImage(t), "instanceNameOnToolbox": name, "accountToolInstanceId": acct})
	// What a URL parser leaves of a raw path: only space, ?, # and %
	// encoded; + & = as they are.
	rawish := strings.NewReplacer("%", "%25", " ", "%20", "?", "%3F", "#", "%23").Replace(name)
	for _, ref := range []string{encodeURIComponent(name), rawish, acct} {
		st := backendOK(t, a, 200, "GET", "/tools/"+ref+"/status", nil)
		if jget(st, "data.instance_name_on_toolbox") != name {
			t.Errorf("ref %s resolved to %v", ref, jget(st, "data.instance_name_on_toolbox"))
		}
		backendOK(t, a, 200, "POST", "/tools/"+ref+"/start", nil)
	}
	// "+" is a plus: the name with a space where the plus is names nothing.
	plusAsSpace := strings.Replace(encodeURIComponent(name), "%2B", "%20", 1)
	for _, ref := range []string{plusAsSpace, "a%2Fb", encodeURIComponent(name) + "%2F"} {
		r := backendCall(t, a, "POST", "/tools/"+ref+"/start", nil, true)
		var m map[string]any
		if r.Status != 404 || json.Unmarshal(r.Body, &m) != nil || m["success"] != false {
			t.Errorf("start %s: %d %s, want a JSON 404", ref, r.Status, r.Body)
		}
	}
	backendOK(t, a, 200, "DELETE", "/tools/"+encodeURIComponent(name), nil)
}

// TestBackendStatusList: /status as path C and the operator console read
// it: token-less (401 by default, 200 with DTMA_PUBLIC_STATUS=true), the
// environment object with its four fields, a version, and for every entry
// a numeric created, a ports array and Docker's container id.
func TestBackendStatusList(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	closed := StartAgent(t, AgentOptions{})
	if r := backendCall(t, closed, "GET", "/status", nil, false); r.Status != 401 {
		t.Errorf("token-less /status by default: %d, want 401", r.Status)
	}
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_PUBLIC_STATUS=true", "BACKEND_TO_DTMA_API_KEY=another-key-0123456789abcdef0123456789"}})
	sfx := uniqueSuffix()
	running, stopped, noAcct := "Running "+sfx, "Stopped "+sfx, "No Account "+sfx
	for _, n := range []string{running, stopped} {
		backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": n, "accountToolInstanceId": dtma.NewUUID()})
	}
	backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": noAcct, "baseConfigOverrideJson": nil})
	backendOK(t, a, 200, "POST", "/tools/"+encodeURIComponent(stopped)+"/stop", nil)

	r := backendCall(t, a, "GET", "/status", nil, false)
	if r.Status != 200 {
		t.Fatalf("token-less /status with DTMA_PUBLIC_STATUS=true: %d %s", r.Status, r.Body)
	}
	body := r.JSON(t)
	env, _ := body["environment"].(map[string]any)
	if env == nil {
		t.Fatalf("/status has no environment object: %s", r.Body)
	}
	for k, want := range map[string]any{"hasAuthToken": true, "hasApiKey": true, "hasApiBaseUrl": false, "port": strconv.Itoa(a.Port)} {
		if env[k] != want {
			t.Errorf("environment.%s = %#v, want %#v", k, env[k], want)
		}
	}
	if v := body["version"]; str(v) == "" {
		t.Errorf("version %v", v)
	}
	if cpu, ok := jget(body, "system_metrics.cpu_load_percent").(float64); !ok || cpu < 0 {
		t.Errorf("system_metrics.cpu_load_percent %v", jget(body, "system_metrics.cpu_load_percent"))
	}
	for name, want := range map[string]string{running: "running", stopped: "stopped", noAcct: "running"} {
		e := statusEntry(t, body, name)
		if got := backendtest.MapStatus(str(e["status"])); got != want {
			t.Errorf("%s: status %q, which the backend holds as %s; want %s", name, e["status"], got, want)
		}
		ins := a.Inspect(str(e["container_id"]))
		if ins == nil || ins.Container.ID != e["container_id"] {
			t.Errorf("%s: container_id %v is not Docker's id", name, e["container_id"])
		}
		created, _ := e["created"].(float64)
		if time.Since(time.Unix(int64(created), 0)) > time.Hour {
			t.Errorf("%s: created %v", name, e["created"])
		}
	}
	// The refresh call (with the token) reads the same.
	if e := statusEntry(t, backendOK(t, a, 200, "GET", "/status", nil), running); e["instance_name_on_toolbox"] != running {
		t.Errorf("refresh entry %v", e)
	}
}

// heartbeatReceiver enforces what the backend's heartbeat receiver can
// store: its token (401 otherwise), status_on_toolbox from its enum, and no
// column it does not have. It counts the per-tool updates that would have
// been stored, and those that would have failed.
type heartbeatReceiver struct {
	srv   *httptest.Server
	token string

	mu      sync.Mutex
	stored  map[string]string // account id -> last status stored
	failed  []string          // why an update failed
	posts   int
	refused int
}

func newHeartbeatReceiver(t *testing.T, token string) *heartbeatReceiver {
	h := &heartbeatReceiver{token: token, stored: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/functions/v1/heartbeat" {
			http.NotFound(w, r)
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+h.token {
			h.refused++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.posts++
		var body struct {
			Tools []map[string]json.RawMessage `json:"tool_statuses"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, ts := range body.Tools {
			var acct, status string
			_ = json.Unmarshal(ts["account_tool_instance_id"], &acct)
			_ = json.Unmarshal(ts["status_on_toolbox"], &status)
			switch {
			case !dtma.IsUUID(acct):
				h.failed = append(h.failed, "account_tool_instance_id "+acct+" is not a UUID")
			case !backendtest.InEnum(status):
				h.failed = append(h.failed, "status_on_toolbox "+status+" is not in the enum")
			case ts["runtime_details"] != nil:
				h.failed = append(h.failed, "column runtime_details does not exist")
			default:
				for k := range ts {
					if k != "account_tool_instance_id" && k != "status_on_toolbox" {
						h.failed = append(h.failed, "column "+k+" does not exist")
					}
				}
				h.stored[acct] = status
			}
		}
		w.WriteHeader(http.StatusNoContent) // answers 204 whatever failed
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *heartbeatReceiver) state() (stored map[string]string, failed []string, posts, refused int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	stored = make(map[string]string, len(h.stored))
	for k, v := range h.stored {
		stored[k] = v
	}
	return stored, slices.Clone(h.failed), h.posts, h.refused
}

// answers reports whether the tool published on port answers GET / with
// 200 within 30 s (a cap for a loaded machine).
func answers(port int) bool {
	c := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
	}
	return false
}

// TestBackendHeartbeat: every per-tool update of every heartbeat is one the
// backend's receiver can store, and says the true state; a host whose token
// the backend does not know logs an error that names the cause.
func TestBackendHeartbeat(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	recv := newHeartbeatReceiver(t, Token)
	a := StartAgent(t, AgentOptions{Env: []string{"AGENTOPIA_API_BASE_URL=" + recv.srv.URL + "/functions/v1", "DTMA_HEARTBEAT_INTERVAL=1s"}})
	sfx := uniqueSuffix()
	runAcct, stopAcct := dtma.NewUUID(), dtma.NewUUID()
	backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": "HB Running " + sfx, "accountToolInstanceId": runAcct})
	backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": "HB Stopped " + sfx, "accountToolInstanceId": stopAcct})
	backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": "HB No Account " + sfx})
	backendOK(t, a, 200, "POST", "/tools/"+encodeURIComponent("HB Stopped "+sfx)+"/stop", nil)

	Eventually(t, 60*time.Second, "heartbeats storing running and stopped", func() bool {
		stored, _, _, _ := recv.state()
		return stored[runAcct] == "running" && stored[stopAcct] == "stopped"
	})
	stored, failed, posts, refused := recv.state()
	if len(failed) > 0 || refused > 0 {
		t.Errorf("%d heartbeats: %d refused, updates that failed: %q", posts, refused, failed)
	}
	if len(stored) != 2 {
		t.Errorf("stored updates for %v, want only the two tools with an account id", stored)
	}

	// A host whose token the backend does not know.
	other := newHeartbeatReceiver(t, "the-token-the-backend-issued-0123456789abcdef")
	b := StartAgent(t, AgentOptions{Env: []string{"AGENTOPIA_API_BASE_URL=" + other.srv.URL + "/functions/v1", "DTMA_HEARTBEAT_INTERVAL=1s"}})
	Eventually(t, 30*time.Second, "an error log naming the token", func() bool {
		return strings.Contains(b.Logs(), `"level":"ERROR","msg":"heartbeat refused by the backend: this host's DTMA_BEARER_TOKEN is likely not the token the backend issued`)
	})
	if strings.Contains(b.Logs(), Token) {
		t.Errorf("the agent logged its token")
	}
}
