package e2e

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// Every rejected deploy, on both faces: the status, the error body naming
// the field, and nothing left behind (no instance, no container).

// rejection is one request the agent must refuse.
type rejection struct {
	name   string
	body   any // a value (sent as JSON) or a string (sent as is)
	status int
	field  string   // v1: error.field; legacy: the message's "<field>: " prefix
	has    []string // substrings the message must contain
	hasNot []string // substrings it must not contain (secrets)
}

// existing is the instance the 409 cases clash with.
type existing struct {
	name, acct, image, echo, secret string
	port                            int
}

func deployExisting(t *testing.T, a *Agent, face string) existing {
	t.Helper()
	s := uniqueSuffix()
	e := existing{name: "Existing Tool " + s, acct: dtma.NewUUID(), image: EchoImage(t), echo: "echo-" + s, secret: "s3cr3t-existing-" + s, port: freePort(t)}
	if face == "v1" {
		a.Expect(201, "POST", "/v1/instances", map[string]any{
			"name": e.name, "account_tool_instance_id": e.acct, "image": e.image,
			"env":   map[string]string{"ECHO": e.echo, "API_KEY": e.secret},
			"ports": []map[string]any{{"container_port": 8080, "host_port": e.port}},
		})
	} else {
		a.Expect(201, "POST", "/tools", legacyBody(e.image, e.name, e.acct, []string{"ECHO=" + e.echo, "API_KEY=" + e.secret},
			map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(e.port)}}}))
	}
	Eventually(t, 20*time.Second, e.name+" serving", func() bool { return HTTPGet(e.port, "/") == e.echo })
	return e
}

// holdPort binds 127.0.0.1:<free port> for the test's life: a port used by
// something other than DTMA.
func holdPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// checkRejections sends each case to path and checks the answer and that
// the agent's instances and the host's containers did not change.
func checkRejections(t *testing.T, a *Agent, face, path string, cases []rejection) {
	t.Helper()
	names, containers := v1Names(t, a), hostContainers(a)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := a.Do("POST", path, c.body)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			body := r.JSON(t)
			var msg string
			if face == "v1" {
				code := map[int]string{400: "invalid", 409: "conflict"}[c.status]
				if got := jget(body, "error.code"); got != code {
					t.Errorf("error.code = %v, want %s: %s", got, code, r.Body)
				}
				if got := jget(body, "error.field"); got != c.field {
					t.Errorf("error.field = %v, want %q: %s", got, c.field, r.Body)
				}
				msg = str(jget(body, "error.message"))
			} else {
				if body["success"] != false {
					t.Errorf("success = %v, want false: %s", body["success"], r.Body)
				}
				if _, ok := body["data"]; ok {
					t.Errorf("error answer carries data: %s", r.Body)
				}
				msg = str(body["message"])
				if !strings.HasPrefix(msg, c.field+": ") {
					t.Errorf("message %q does not name the field %q", msg, c.field)
				}
			}
			if strings.TrimSpace(msg) == "" {
				t.Errorf("empty message: %s", r.Body)
			}
			for _, s := range c.has {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
			for _, s := range c.hasNot {
				if strings.Contains(string(r.Body), s) {
					t.Errorf("answer contains %q: %s", s, r.Body)
				}
			}
			if got := v1Names(t, a); !slices.Equal(got, names) {
				t.Errorf("instances changed: %v -> %v", names, got)
			}
			if got := hostContainers(a); !slices.Equal(got, containers) {
				t.Errorf("containers changed: %v -> %v", containers, got)
			}
		})
	}
}

// bigBody is a body just over the 1 MiB limit.
func bigBody(face, img string) string {
	pad := strings.Repeat("x", 1<<20)
	if face == "v1" {
		return `{"name":"big","image":"` + img + `","env":{"PAD":"` + pad + `"}}`
	}
	return `{"instanceNameOnToolbox":"big","dockerImageUrl":"` + img + `","baseConfigOverrideJson":{"Env":["PAD=` + pad + `"]}}`
}

// TestValidationV1 sends every bad or conflicting POST /v1/instances.
func TestValidationV1(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	e := deployExisting(t, a, "v1")
	img := e.image
	n := "New Tool " + uniqueSuffix()
	port := func(p map[string]any) map[string]any {
		return map[string]any{"name": n, "image": img, "ports": []map[string]any{p}}
	}
	otherSecret := "s3cr3t-changed-" + uniqueSuffix()
	held := holdPort(t)

	checkRejections(t, a, "v1", "/v1/instances", []rejection{
		{name: "missing name", body: map[string]any{"image": img}, status: 400, field: "name"},
		{name: "blank name", body: map[string]any{"name": "   ", "image": img}, status: 400, field: "name"},
		{name: "missing image", body: map[string]any{"name": n}, status: 400, field: "image"},
		{name: "bad account id", body: map[string]any{"name": n, "image": img, "account_tool_instance_id": "not-a-uuid"}, status: 400, field: "account_tool_instance_id"},
		{name: "bad env name", body: map[string]any{"name": n, "image": img, "env": map[string]string{"1BAD": "v"}}, status: 400, field: "env.1BAD"},
		{name: "bad pull policy", body: map[string]any{"name": n, "image": img, "pull_policy": "sometimes"}, status: 400, field: "pull_policy"},
		{name: "container_port 0", body: port(map[string]any{"container_port": 0}), status: 400, field: "ports[0].container_port"},
		{name: "container_port 70000", body: port(map[string]any{"container_port": 70000}), status: 400, field: "ports[0].container_port"},
		{name: "host_port 70000", body: port(map[string]any{"container_port": 8080, "host_port": 70000}), status: 400, field: "ports[0].host_port"},
		{name: "protocol xyz", body: port(map[string]any{"container_port": 8080, "protocol": "xyz"}), status: 400, field: "ports[0].protocol"},
		{name: "host_ip nope", body: port(map[string]any{"container_port": 8080, "host_ip": "nope"}), status: 400, field: "ports[0].host_ip"},
		{name: "duplicate host port", body: map[string]any{"name": n, "image": img, "ports": []map[string]any{
			{"container_port": 8080, "host_port": 40123}, {"container_port": 9090, "host_port": 40123}}}, status: 400, field: "ports[1].host_port"},
		{name: "unknown field", body: map[string]any{"name": n, "image": img, "imagee": img}, status: 400, field: "imagee"},
		{name: "wrong type", body: map[string]any{"name": 5, "image": img}, status: 400, field: "name"},
		{name: "malformed JSON", body: `{"name": "x", "image": `, status: 400, field: "body"},
		{name: "trailing data", body: `{"name": "x", "image": "y"} {}`, status: 400, field: "body"},
		{name: "empty body", body: ``, status: 400, field: "body"},
		{name: "array body", body: `[{"name": "x"}]`, status: 400, field: "body"},
		{name: "string body", body: `"x"`, status: 400, field: "body"},
		{name: "body too large", body: bigBody("v1", img), status: 400, field: "body", has: []string{"1048576"}},

		{name: "same name, other image", body: map[string]any{"name": e.name, "account_tool_instance_id": e.acct, "image": img + "-other",
			"env": map[string]string{"ECHO": e.echo, "API_KEY": e.secret}, "ports": []map[string]any{{"container_port": 8080, "host_port": e.port}}},
			status: 409, field: "name", has: []string{"image"}, hasNot: []string{e.secret}},
		{name: "same name, other env value", body: map[string]any{"name": e.name, "account_tool_instance_id": e.acct, "image": img,
			"env": map[string]string{"ECHO": e.echo, "API_KEY": otherSecret}, "ports": []map[string]any{{"container_port": 8080, "host_port": e.port}}},
			status: 409, field: "name", has: []string{"env values differ"}, hasNot: []string{e.secret, otherSecret, e.echo, "API_KEY"}},
		{name: "account id under another name", body: map[string]any{"name": n, "account_tool_instance_id": e.acct, "image": img},
			status: 409, field: "account_tool_instance_id", has: []string{e.name}},
		{name: "host port of another instance", body: port(map[string]any{"container_port": 8080, "host_port": e.port}),
			status: 409, field: "ports[0].host_port", has: []string{strconv.Itoa(e.port), e.name}},
		{name: "host port of the agent", body: port(map[string]any{"container_port": 8080, "host_port": a.Port}),
			status: 409, field: "ports[0].host_port", has: []string{strconv.Itoa(a.Port), "agent"}},
		{name: "host port in use on the host", body: port(map[string]any{"container_port": 8080, "host_port": held}),
			status: 409, field: "ports[0].host_port", has: []string{strconv.Itoa(held), "in use"}},
	})

	// The existing instance is untouched by all of it.
	got := a.Expect(200, "GET", "/v1/instances/"+e.acct, nil).JSON(t)
	if got["docker_status"] != "running" || got["name"] != e.name {
		t.Errorf("existing instance after the rejections: %v", got)
	}
	if !Serves(e.port, "/env/API_KEY", e.secret) {
		t.Errorf("existing container does not answer its API_KEY: it lost its env (or no longer serves)")
	}
}

// TestValidationLegacy sends every bad or conflicting POST /tools to an
// agent that rejects host ports it cannot have
// (DTMA_LEGACY_PORT_CONFLICT=reject; the default remap is tested in
// backend_test.go).
func TestValidationLegacy(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_LEGACY_PORT_CONFLICT=reject"}})
	e := deployExisting(t, a, "legacy")
	img := e.image
	n := "New Tool " + uniqueSuffix()
	pb := func(bindings map[string]any) map[string]any { return legacyBody(img, n, "", nil, bindings) }
	hp := func(p string) []map[string]string { return []map[string]string{{"HostPort": p}} }
	otherSecret := "s3cr3t-changed-" + uniqueSuffix()
	held := holdPort(t)
	sameSpec := func(image string, env []string) map[string]any {
		return legacyBody(image, e.name, e.acct, env, map[string]any{"8080/tcp": hp(strconv.Itoa(e.port))})
	}
	const pbf = "baseConfigOverrideJson.HostConfig.PortBindings"

	checkRejections(t, a, "legacy", "/tools", []rejection{
		{name: "missing name", body: map[string]any{"dockerImageUrl": img}, status: 400, field: "instanceNameOnToolbox"},
		{name: "missing image", body: map[string]any{"instanceNameOnToolbox": n}, status: 400, field: "dockerImageUrl"},
		{name: "bad account id", body: legacyBody(img, n, "not-a-uuid", nil, nil), status: 400, field: "accountToolInstanceId"},
		{name: "env without =", body: legacyBody(img, n, "", []string{"NOEQUALS"}, nil), status: 400, field: "baseConfigOverrideJson.Env[0]"},
		{name: "bad env name", body: legacyBody(img, n, "", []string{"OK=1", "1BAD=v"}, nil), status: 400, field: "baseConfigOverrideJson.Env.1BAD"},
		{name: "container port 0", body: pb(map[string]any{"0/tcp": hp("")}), status: 400, field: pbf + `["0/tcp"]`},
		{name: "container port 70000", body: pb(map[string]any{"70000/tcp": hp("")}), status: 400, field: pbf + `["70000/tcp"]`},
		{name: "bad key", body: pb(map[string]any{"http": hp("")}), status: 400, field: pbf + `["http"]`},
		{name: "protocol xyz", body: pb(map[string]any{"8080/xyz": hp("")}), status: 400, field: pbf + `["8080/xyz"]`},
		{name: "HostPort abc", body: pb(map[string]any{"8080/tcp": hp("abc")}), status: 400, field: pbf + `["8080/tcp"].HostPort`},
		{name: "HostIp nope", body: pb(map[string]any{"8080/tcp": []map[string]string{{"HostIp": "nope", "HostPort": ""}}}), status: 400, field: pbf + `["8080/tcp"]`},
		{name: "duplicate host port", body: pb(map[string]any{"8080/tcp": hp("40123"), "9090/tcp": hp("40123")}), status: 400, field: pbf + `["9090/tcp"]`},
		{name: "wrong type", body: map[string]any{"instanceNameOnToolbox": n, "dockerImageUrl": 5}, status: 400, field: "dockerImageUrl"},
		{name: "malformed JSON", body: `{"instanceNameOnToolbox": `, status: 400, field: "body"},
		{name: "empty body", body: ``, status: 400, field: "body"},
		{name: "array body", body: `[]`, status: 400, field: "body"},
		{name: "body too large", body: bigBody("legacy", img), status: 400, field: "body", has: []string{"1048576"}},

		{name: "same name, other image", body: sameSpec(img+"-other", []string{"ECHO=" + e.echo, "API_KEY=" + e.secret}),
			status: 409, field: "instanceNameOnToolbox", has: []string{"image"}, hasNot: []string{e.secret}},
		{name: "same name, other env value", body: sameSpec(img, []string{"ECHO=" + e.echo, "API_KEY=" + otherSecret}),
			status: 409, field: "instanceNameOnToolbox", has: []string{"env values differ"}, hasNot: []string{e.secret, otherSecret, e.echo, "API_KEY"}},
		{name: "same name, env dropped", body: sameSpec(img, []string{"ECHO=" + e.echo}),
			status: 409, field: "instanceNameOnToolbox", has: []string{"env removed: API_KEY"}, hasNot: []string{e.secret}},
		{name: "account id under another name", body: legacyBody(img, n, e.acct, nil, nil),
			status: 409, field: "accountToolInstanceId", has: []string{e.name}},
		{name: "host port of another instance", body: pb(map[string]any{"8080/tcp": hp(strconv.Itoa(e.port))}),
			status: 409, field: pbf + `["8080/tcp"]`, has: []string{strconv.Itoa(e.port), e.name}},
		{name: "host port of the agent", body: pb(map[string]any{"8080/tcp": hp(strconv.Itoa(a.Port))}),
			status: 409, field: pbf + `["8080/tcp"]`, has: []string{strconv.Itoa(a.Port), "agent"}},
		{name: "host port in use on the host", body: pb(map[string]any{"8080/tcp": hp(strconv.Itoa(held))}),
			status: 409, field: pbf + `["8080/tcp"]`, has: []string{strconv.Itoa(held), "in use"}},
	})

	got := findTool(t, a.Expect(200, "GET", "/tools/status", nil).JSON(t), e.name)
	if got["status"] != "running" || got["account_tool_instance_id"] != e.acct {
		t.Errorf("existing tool after the rejections: %v", got)
	}
}

// TestUnknownRef: every per-instance route answers 404 in its face's
// envelope for a ref that names nothing, and changes nothing.
func TestUnknownRef(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "Known " + uniqueSuffix(), "image": EchoImage(t)})
	names, containers := v1Names(t, a), hostContainers(a)
	for _, ref := range []string{url.PathEscape("No Such Tool"), dtma.NewUUID()} {
		for _, rt := range [][2]string{
			{"GET", "/tools/" + ref + "/status"}, {"GET", "/tools/" + ref + "/logs"}, {"POST", "/tools/" + ref + "/start"},
			{"POST", "/tools/" + ref + "/stop"}, {"POST", "/tools/" + ref + "/restart"}, {"DELETE", "/tools/" + ref},
			{"GET", "/v1/instances/" + ref}, {"GET", "/v1/instances/" + ref + "/logs"}, {"POST", "/v1/instances/" + ref + "/start"},
			{"POST", "/v1/instances/" + ref + "/stop"}, {"POST", "/v1/instances/" + ref + "/restart"}, {"DELETE", "/v1/instances/" + ref},
		} {
			r := a.Expect(404, rt[0], rt[1], nil)
			body := r.JSON(t)
			if strings.HasPrefix(rt[1], "/v1/") {
				if jget(body, "error.code") != "not_found" || str(jget(body, "error.message")) == "" {
					t.Errorf("%s %s: %s", rt[0], rt[1], r.Body)
				}
			} else if body["success"] != false || str(body["message"]) == "" {
				t.Errorf("%s %s: %s", rt[0], rt[1], r.Body)
			}
		}
	}
	if got := v1Names(t, a); !slices.Equal(got, names) {
		t.Errorf("instances changed: %v -> %v", names, got)
	}
	if got := hostContainers(a); !slices.Equal(got, containers) {
		t.Errorf("containers changed: %v -> %v", containers, got)
	}
}
