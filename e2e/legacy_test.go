package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/client"
)

// The legacy face, end to end: the requests the platform's backend sends
// (shared/reference/legacy-dtma-api.md), against the real binary and the
// real Docker daemon.

// TestLegacyFlow walks one tool through the whole legacy life cycle the
// backend drives: deploy with a backend-style name, reach it, stop and
// start by both kinds of ref, restart, status, logs, the status lists,
// and delete.
func TestLegacyFlow(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})

	suffix := uniqueSuffix()
	name := "Context7 MCP Server-" + suffix
	ref := url.PathEscape(name) // "Context7%20MCP%20Server-..."
	if !strings.Contains(ref, "%20") {
		t.Fatalf("ref %q is not URL-encoded", ref)
	}
	acct := dtma.NewUUID()
	echo := "legacy-echo-" + suffix
	port := freePort(t)
	before := time.Now()

	r := a.Expect(201, "POST", "/tools", legacyBody(img, name, acct,
		[]string{"ECHO=" + echo, "LOG_LEVEL=info"},
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(port)}}}))
	body := r.JSON(t)
	if body["success"] != true || str(body["message"]) == "" {
		t.Fatalf("deploy envelope: %s", r.Body)
	}
	cid := str(jget(body, "data.container_id"))
	if cid == "" {
		t.Fatalf("no data.container_id: %s", r.Body)
	}
	wantData := map[string]any{
		"data.instance_name_on_toolbox": name,
		"data.account_tool_instance_id": acct,
		"data.image":                    img,
		"data.state":                    "running",
		"data.ports.0.private_port":     float64(8080),
		"data.ports.0.public_port":      float64(port),
		"data.ports.0.type":             "tcp",
		"data.ports.0.ip":               "127.0.0.1",
	}
	for path, want := range wantData {
		if got := jget(body, path); got != want {
			t.Errorf("deploy %s = %v, want %v", path, got, want)
		}
	}
	if n := len(jlist(body, "data.ports")); n != 1 {
		t.Errorf("deploy data.ports has %d elements, want 1: %s", n, r.Body)
	}

	// The container serves the env value on the published port.
	Eventually(t, 30*time.Second, "echo answer on the published port", func() bool { return HTTPGet(port, "/") == echo })

	// Docker: a valid derived name, DTMA's labels, running.
	ins := a.Inspect(cid)
	if ins == nil {
		t.Fatalf("container %s not found in Docker", cid)
	}
	cname := strings.TrimPrefix(ins.Container.Name, "/")
	if want := "dtma-context7-mcp-server-" + suffix; cname != want {
		t.Errorf("container name %q, want %q", cname, want)
	}
	if !validContainerName.MatchString(cname) {
		t.Errorf("container name %q is not a valid Docker name", cname)
	}
	if got := str(jget(body, "data.container_name")); got != cname {
		t.Errorf("deploy data.container_name %q, Docker says %q", got, cname)
	}
	labels := ins.Container.Config.Labels
	wantLabels := map[string]string{
		"dtma.managed":                  "true",
		"dtma.host":                     a.HostID,
		"dtma.instance":                 name,
		"dtma.account-tool-instance-id": acct,
	}
	for k, v := range wantLabels {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	if h := labels["dtma.spec-hash"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h) {
		t.Errorf("label dtma.spec-hash = %q, want a hex SHA-256", h)
	}
	if !ins.Container.State.Running {
		t.Fatalf("container not running after deploy: %s", ins.Container.State.Status)
	}

	// Stop by name (URL-encoded), then again.
	r = a.Expect(200, "POST", "/tools/"+ref+"/stop", nil)
	body = r.JSON(t)
	if body["success"] != true || jget(body, "data.state") != "exited" || jget(body, "data.changed") != true {
		t.Fatalf("stop answered %s, want success, state exited, changed", r.Body)
	}
	if ins := a.Inspect(cid); ins == nil || ins.Container.State.Running {
		t.Fatalf("Docker shows the container running after stop")
	}
	r = a.Expect(200, "POST", "/tools/"+ref+"/stop", nil)
	body = r.JSON(t)
	if body["success"] != true || !strings.Contains(str(body["message"]), "already stopped") || jget(body, "data.state") != "exited" {
		t.Fatalf("second stop answered %s, want success saying already stopped", r.Body)
	}

	// Start by account id, then again.
	r = a.Expect(200, "POST", "/tools/"+acct+"/start", nil)
	body = r.JSON(t)
	if body["success"] != true || jget(body, "data.state") != "running" || jget(body, "data.changed") != true {
		t.Fatalf("start answered %s", r.Body)
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Fatalf("Docker shows the container not running after start")
	}
	r = a.Expect(200, "POST", "/tools/"+acct+"/start", nil)
	body = r.JSON(t)
	if body["success"] != true || !strings.Contains(str(body["message"]), "already running") || jget(body, "data.state") != "running" {
		t.Fatalf("second start answered %s, want success saying already running", r.Body)
	}

	// Restart: Docker's StartedAt moves.
	started := startedAt(t, a, cid)
	r = a.Expect(200, "POST", "/tools/"+ref+"/restart", nil)
	body = r.JSON(t)
	if body["success"] != true || jget(body, "data.state") != "running" {
		t.Fatalf("restart answered %s", r.Body)
	}
	if now := startedAt(t, a, cid); now == started {
		t.Fatalf("StartedAt unchanged by restart (%s)", now)
	}
	Eventually(t, 30*time.Second, "echo answer after restart", func() bool { return HTTPGet(port, "/") == echo })

	// Per-tool status.
	r = a.Expect(200, "GET", "/tools/"+ref+"/status", nil)
	body = r.JSON(t)
	if body["success"] != true || body["status"] != "running" || jget(body, "data.container_id") != cid ||
		jget(body, "data.instance_name_on_toolbox") != name {
		t.Fatalf("tool status answered %s", r.Body)
	}

	// Logs: the container's own lines, bounded by tail.
	HTTPGet(port, "/env/FIRST")
	HTTPGet(port, "/env/SECOND")
	var logs []string
	Eventually(t, 30*time.Second, "the last two request lines in the logs", func() bool {
		r := a.Expect(200, "GET", "/tools/"+ref+"/logs?tail=2", nil)
		body := r.JSON(t)
		if body["success"] != true {
			t.Fatalf("logs answered %s", r.Body)
		}
		logs = strList(body["logs"])
		return slices.Equal(logs, []string{"request GET /env/FIRST", "request GET /env/SECOND"})
	})
	r = a.Expect(200, "GET", "/tools/"+acct+"/logs?tail=100", nil)
	logs = strList(r.JSON(t)["logs"])
	if !slices.Contains(logs, "request GET /") {
		t.Errorf("logs?tail=100 lack a \"request GET /\" line: %q", logs)
	}

	// The status lists.
	r = a.Expect(200, "GET", "/tools/status", nil)
	body = r.JSON(t)
	if str(body["version"]) == "" {
		t.Errorf("/tools/status has no version: %s", r.Body)
	}
	checkLegacyTool(t, "/tools/status", findTool(t, body, name), name, acct, cid, img, port, before)

	r = a.Expect(200, "GET", "/status", nil)
	body = r.JSON(t)
	if body["status"] != "healthy" || body["service"] != "DTMA" || str(body["version"]) == "" {
		t.Errorf("/status envelope: %s", r.Body)
	}
	if ts, err := time.Parse(time.RFC3339Nano, str(body["timestamp"])); err != nil || time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
		t.Errorf("/status timestamp %v is not a current RFC 3339 time (%v)", body["timestamp"], err)
	}
	checkLegacyTool(t, "/status", findTool(t, body, name), name, acct, cid, img, port, before)
	for _, f := range []string{"system_metrics.cpu_load_percent", "system_metrics.memory.total_bytes", "system_metrics.memory.used_bytes",
		"system_metrics.memory.free_bytes", "system_metrics.disk.total_bytes", "system_metrics.disk.used_bytes", "system_metrics.disk.free_bytes"} {
		if _, ok := jget(body, f).(float64); !ok {
			t.Errorf("/status %s = %v, want a number", f, jget(body, f))
		}
	}
	if jget(body, "system_metrics.memory.total_bytes").(float64) <= 0 || jget(body, "system_metrics.disk.total_bytes").(float64) <= 0 {
		t.Errorf("/status reports zero memory or disk: %s", r.Body)
	}
	if jget(body, "system_metrics.disk.mount") != "/" {
		t.Errorf("/status system_metrics.disk.mount = %v, want /", jget(body, "system_metrics.disk.mount"))
	}

	// Delete: container gone, instance gone, a second delete is 404.
	r = a.Expect(200, "DELETE", "/tools/"+ref, nil)
	if body := r.JSON(t); body["success"] != true || str(body["message"]) == "" {
		t.Fatalf("delete answered %s", r.Body)
	}
	if a.Inspect(cid) != nil {
		t.Fatalf("container %s still exists after delete", cid)
	}
	for _, p := range []string{"/tools/" + ref + "/status", "/tools/" + acct + "/status"} {
		r = a.Expect(404, "GET", p, nil)
		if body := r.JSON(t); body["success"] != false || str(body["message"]) == "" {
			t.Errorf("GET %s after delete answered %s", p, r.Body)
		}
	}
	r = a.Expect(404, "DELETE", "/tools/"+ref, nil)
	if body := r.JSON(t); body["success"] != false {
		t.Errorf("second delete answered %s", r.Body)
	}
	if tools := jlist(a.Expect(200, "GET", "/tools/status", nil).JSON(t), "tool_instances"); len(tools) != 0 {
		t.Errorf("/tools/status still lists %d tools after delete", len(tools))
	}
}

// TestLegacyHostPortAllocation: HostPort "" and "0" both mean "allocate":
// the answer reports the allocated port and the container answers on it.
func TestLegacyHostPortAllocation(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	seen := map[float64]bool{}
	for _, hp := range []string{"", "0"} {
		name := "Alloc Tool [" + hp + "] " + uniqueSuffix()
		echo := "alloc-" + uniqueSuffix()
		r := a.Expect(201, "POST", "/tools", legacyBody(img, name, "", []string{"ECHO=" + echo},
			map[string]any{"8080/tcp": []map[string]string{{"HostPort": hp}}}))
		body := r.JSON(t)
		pub, _ := jget(body, "data.ports.0.public_port").(float64)
		if pub < float64(a.portLo) || pub > float64(a.portLo+39) {
			t.Fatalf("HostPort %q: public_port %v outside the agent's range %d-%d: %s", hp, pub, a.portLo, a.portLo+39, r.Body)
		}
		if seen[pub] {
			t.Fatalf("HostPort %q: port %v allocated twice", hp, pub)
		}
		seen[pub] = true
		Eventually(t, 30*time.Second, "echo answer on the allocated port", func() bool { return HTTPGet(int(pub), "/") == echo })
		// Docker publishes exactly that port.
		ins := a.Inspect(str(jget(body, "data.container_id")))
		if ins == nil {
			t.Fatalf("container missing")
		}
		var got []string
		for _, b := range ins.Container.HostConfig.PortBindings {
			for _, hb := range b {
				got = append(got, hb.HostIP.String()+":"+hb.HostPort)
			}
		}
		if want := []string{"127.0.0.1:" + strconv.Itoa(int(pub))}; !slices.Equal(got, want) {
			t.Errorf("HostPort %q: Docker port bindings %v, want %v", hp, got, want)
		}
		// The status list reports the same port.
		tool := findTool(t, a.Expect(200, "GET", "/tools/status", nil).JSON(t), name)
		if jget(tool, "ports.0.public_port") != pub {
			t.Errorf("HostPort %q: /tools/status reports %v, deploy reported %v", hp, jget(tool, "ports.0.public_port"), pub)
		}
	}
}

// TestLegacyRedeployIdempotent: the backend's recovery path (POST /tools
// again with the same body) answers 2xx with the same container, leaves a
// running container alone, and starts a stopped one.
func TestLegacyRedeployIdempotent(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	suffix := uniqueSuffix()
	name := "Retry MCP Server-" + suffix
	acct := dtma.NewUUID()
	port := freePort(t)
	deploy := legacyBody(img, name, acct, []string{"ECHO=retry-" + suffix},
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(port)}}})

	r := a.Expect(201, "POST", "/tools", deploy)
	cid := str(jget(r.JSON(t), "data.container_id"))
	started := startedAt(t, a, cid)

	// Retry while running: same container, not restarted.
	r = a.Do("POST", "/tools", deploy)
	if r.Status < 200 || r.Status > 299 {
		t.Fatalf("retry answered %d: %s", r.Status, r.Body)
	}
	body := r.JSON(t)
	if body["success"] != true || jget(body, "data.container_id") != cid || jget(body, "data.state") != "running" {
		t.Fatalf("retry answered %s, want success with container %s running", r.Body, cid)
	}
	if now := startedAt(t, a, cid); now != started {
		t.Errorf("retry restarted a running container: StartedAt %s -> %s", started, now)
	}
	if n := len(a.HostContainers()); n != 1 {
		t.Errorf("%d containers after the retry, want 1", n)
	}

	// The container stopped behind the agent (a failed start, docker stop):
	// the retry starts it again.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	timeout := 5
	if _, err := a.Docker.ContainerStop(ctx, cid, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("docker stop: %v", err)
	}
	if ins := a.Inspect(cid); ins == nil || ins.Container.State.Running {
		t.Fatalf("container still running after docker stop")
	}
	r = a.Do("POST", "/tools", deploy)
	if r.Status < 200 || r.Status > 299 {
		t.Fatalf("retry after stop answered %d: %s", r.Status, r.Body)
	}
	body = r.JSON(t)
	if jget(body, "data.container_id") != cid || jget(body, "data.state") != "running" {
		t.Fatalf("retry after stop answered %s, want container %s running", r.Body, cid)
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Fatalf("Docker shows the container not running after the retry")
	}
	Eventually(t, 30*time.Second, "echo answer after the retry", func() bool { return HTTPGet(port, "/") == "retry-"+suffix })

	// The same after a stop through the API (desired state stopped).
	a.Expect(200, "POST", "/tools/"+acct+"/stop", nil)
	r = a.Do("POST", "/tools", deploy)
	if r.Status < 200 || r.Status > 299 || jget(r.JSON(t), "data.container_id") != cid {
		t.Fatalf("retry after API stop answered %d: %s", r.Status, r.Body)
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Fatalf("Docker shows the container not running after the retry following an API stop")
	}
	if n := len(a.HostContainers()); n != 1 {
		t.Errorf("%d containers after the retries, want 1", n)
	}
}

// TestLegacyNamesThatSlugAlike: two backend names that derive the same
// container name ("Slug Tool X" and "slug-tool-x") are two instances with
// two valid, distinct container names, each managed by its own name.
func TestLegacyNamesThatSlugAlike(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	s := uniqueSuffix()
	names := []string{"Slug Tool " + s, "slug-tool-" + s, "SLUG  TOOL  " + s}
	cids := map[string]string{}
	cnames := map[string]bool{}
	for _, n := range names {
		r := a.Expect(201, "POST", "/tools", legacyBody(img, n, "", []string{"ECHO=" + n}, map[string]any{"8080/tcp": []map[string]string{{"HostPort": ""}}}))
		body := r.JSON(t)
		cn := str(jget(body, "data.container_name"))
		if !strings.HasPrefix(cn, "dtma-slug-tool-"+s) || !validContainerName.MatchString(cn) {
			t.Errorf("%q got container name %q", n, cn)
		}
		if cnames[cn] {
			t.Fatalf("container name %q given twice", cn)
		}
		cnames[cn] = true
		cids[n] = str(jget(body, "data.container_id"))
		pub := int(jget(body, "data.ports.0.public_port").(float64))
		Eventually(t, 30*time.Second, "echo answer of "+n, func() bool { return HTTPGet(pub, "/") == n })
	}
	// Each name reaches its own container.
	for _, n := range names {
		r := a.Expect(200, "POST", "/tools/"+url.PathEscape(n)+"/stop", nil)
		if jget(r.JSON(t), "data.container_id") != cids[n] {
			t.Errorf("stop of %q acted on %v, want %s", n, jget(r.JSON(t), "data.container_id"), cids[n])
		}
		for _, other := range names {
			if running := a.Inspect(cids[other]).Container.State.Running; running != (slices.Index(names, other) > slices.Index(names, n)) {
				t.Errorf("after stopping %q: %q running=%v", n, other, running)
			}
		}
	}
	for _, n := range names {
		a.Expect(200, "DELETE", "/tools/"+url.PathEscape(n), nil)
		if a.Inspect(cids[n]) != nil {
			t.Errorf("container of %q survives its delete", n)
		}
	}
}

// ---- helpers shared by the e2e tests of this package's files ----

var validContainerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

var suffixSeq atomic.Int64

// uniqueSuffix returns a lower-case token unique to this process and call,
// so that derived container names never collide on the shared daemon.
func uniqueSuffix() string {
	return strings.ToLower(dockertest.RunID()) + "-" + strconv.FormatInt(suffixSeq.Add(1), 10)
}

// legacyBody builds a POST /tools body; empty parts are left out.
func legacyBody(image, name, acct string, env []string, bindings map[string]any) map[string]any {
	b := map[string]any{"dockerImageUrl": image, "instanceNameOnToolbox": name}
	if acct != "" {
		b["accountToolInstanceId"] = acct
	}
	cfg := map[string]any{}
	if env != nil {
		cfg["Env"] = env
	}
	if bindings != nil {
		cfg["HostConfig"] = map[string]any{"PortBindings": bindings}
	}
	if len(cfg) > 0 {
		b["baseConfigOverrideJson"] = cfg
	}
	return b
}

// jget follows a dotted path ("data.ports.0.public_port") through decoded
// JSON; nil when any step is missing.
func jget(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// jlist is jget for an array of objects.
func jlist(v any, path string) []map[string]any {
	arr, _ := jget(v, path).([]any)
	out := make([]map[string]any, 0, len(arr))
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strList(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// startedAt returns Docker's State.StartedAt of the container.
func startedAt(t testing.TB, a *Agent, id string) string {
	t.Helper()
	ins := a.Inspect(id)
	if ins == nil {
		t.Fatalf("container %s not found", id)
	}
	return ins.Container.State.StartedAt
}

// findTool returns the tool_instances element with that name.
func findTool(t testing.TB, body map[string]any, name string) map[string]any {
	t.Helper()
	for _, tool := range jlist(body, "tool_instances") {
		if tool["instance_name_on_toolbox"] == name {
			return tool
		}
	}
	b, _ := json.Marshal(body)
	t.Fatalf("tool %q not in tool_instances: %s", name, b)
	return nil
}

// checkLegacyTool checks one tool_instances element field by field.
func checkLegacyTool(t testing.TB, where string, tool map[string]any, name, acct, cid, img string, port int, before time.Time) {
	t.Helper()
	want := map[string]any{
		"account_tool_instance_id": acct,
		"instance_name_on_toolbox": name,
		"container_id":             cid,
		"status":                   "running",
		"image":                    img,
	}
	for k, v := range want {
		if tool[k] != v {
			t.Errorf("%s: %s = %v, want %v", where, k, tool[k], v)
		}
	}
	ports := jlist(tool, "ports")
	if len(ports) != 1 {
		t.Fatalf("%s: ports %v, want one", where, tool["ports"])
	}
	wantPort := map[string]any{"ip": "127.0.0.1", "private_port": float64(8080), "public_port": float64(port), "type": "tcp"}
	for k, v := range wantPort {
		if ports[0][k] != v {
			t.Errorf("%s: ports[0].%s = %v, want %v", where, k, ports[0][k], v)
		}
	}
	created, ok := tool["created"].(float64)
	if !ok || int64(created) < before.Unix()-5 || int64(created) > time.Now().Unix()+5 {
		t.Errorf("%s: created = %v, want unix seconds around %d", where, tool["created"], before.Unix())
	}
}

// v1Names returns the sorted names GET /v1/instances lists.
func v1Names(t testing.TB, a *Agent) []string {
	t.Helper()
	r := a.Expect(200, "GET", "/v1/instances", nil)
	var names []string
	for _, inst := range jlist(r.JSON(t), "instances") {
		names = append(names, str(inst["name"]))
	}
	sort.Strings(names)
	return names
}

// hostContainers returns a.HostContainers() sorted.
func hostContainers(a *Agent) []string {
	ids := a.HostContainers()
	sort.Strings(ids)
	return ids
}
