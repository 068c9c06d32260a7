package e2e

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/testregistry"
)

// hardeningErr is the v1 error envelope.
type hardeningErr struct {
	Error struct {
		Code, Message, Field string
	} `json:"error"`
}

func v1Err(t *testing.T, r *Response) hardeningErr {
	t.Helper()
	var e hardeningErr
	r.Decode(t, &e)
	return e
}

// A container DTMA did not create and was not asked to migrate survives
// every API call: adoption by an id prefix, by a name that is not the
// instance's, of a container whose image differs, or with a container field
// that is not a Docker name is refused (a 400 naming the field for the
// malformed ones, "skip" for the rest) and records nothing; logs, status,
// start, stop, restart and delete by its name, full id and id prefixes are
// 404 on both faces; the container keeps its id and keeps running, never
// restarted.
func TestHardeningForeignContainerUntouchable(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	sfx := strings.TrimPrefix(a.HostID, "e2e-")
	cname := "foreign-" + sfx
	id, port := rcLegacyContainer(t, a, img, cname, "foreign")
	_, _, started, _ := rcStarted(t, a, id)

	// Adoption attempts that must not take it.
	for _, tc := range []struct {
		body   map[string]any
		status int
		field  string
	}{
		{map[string]any{"name": cname, "container": id[:12], "image": img}, 200, ""},
		{map[string]any{"name": cname, "container": id[:6], "image": img}, 200, ""},
		{map[string]any{"name": "Other Tool " + sfx, "container": cname, "image": img}, 200, ""},
		{map[string]any{"name": "Other Tool " + sfx, "container": id, "image": img}, 200, ""},
		{map[string]any{"name": cname, "container": cname, "image": img + "-other"}, 200, ""},
		{map[string]any{"name": cname, "container": cname}, 400, "image"},
		{map[string]any{"name": cname, "container": "../images/" + img, "image": img}, 400, "container"},
		{map[string]any{"name": cname, "container": "../containers", "image": img}, 400, "container"},
		{map[string]any{"name": cname, "container": cname + "/json", "image": img}, 400, "container"},
		{map[string]any{"name": "..", "image": img}, 400, "name"},
	} {
		r := a.Do("POST", "/v1/adopt", tc.body)
		if r.Status != tc.status {
			t.Fatalf("adopt %v: status %d, want %d: %s", tc.body, r.Status, tc.status, r.Body)
		}
		if tc.status == 400 {
			if e := v1Err(t, r); e.Error.Field != tc.field || e.Error.Code != "invalid" {
				t.Errorf("adopt %v: error %+v, want invalid on %s", tc.body, e.Error, tc.field)
			}
			continue
		}
		if got := r.JSON(t); got["action"] != "skip" {
			t.Fatalf("adopt %v answered %s, want a skip", tc.body, r.Body)
		}
	}
	if list := rcList(t, a); len(list) != 0 {
		t.Fatalf("refused adoptions recorded %+v", list)
	}

	refs := []string{cname, "/" + cname, id, id[:12], id[:6]}
	for _, ref := range refs {
		p := url.PathEscape(ref)
		for _, req := range [][2]string{
			{"GET", "/v1/instances/" + p}, {"GET", "/v1/instances/" + p + "/logs?tail=10"},
			{"POST", "/v1/instances/" + p + "/stop"}, {"POST", "/v1/instances/" + p + "/start"},
			{"POST", "/v1/instances/" + p + "/restart"}, {"DELETE", "/v1/instances/" + p},
			{"GET", "/tools/" + p + "/status"}, {"GET", "/tools/" + p + "/logs?tail=10"},
			{"POST", "/tools/" + p + "/stop"}, {"POST", "/tools/" + p + "/start"},
			{"POST", "/tools/" + p + "/restart"}, {"DELETE", "/tools/" + p},
		} {
			r := a.Do(req[0], req[1], nil)
			// "/" + name is not one path segment: the router answers 404
			// itself; anything else but 404 is a failure.
			if r.Status != 404 {
				t.Errorf("%s %s on a foreign container: status %d, want 404: %s", req[0], req[1], r.Status, r.Body)
			}
		}
	}
	gotID, state, gotStarted, ok := rcStarted(t, a, id)
	if !ok || gotID != id || state != "running" || gotStarted != started {
		t.Fatalf("foreign container after the calls: id %s state %q started %s (exists %v), was %s running started %s", gotID, state, gotStarted, ok, id, started)
	}
	if !Serves(port, "/", "foreign") {
		t.Errorf("the foreign container no longer serves")
	}
}

// With DTMA_ADOPT=off the adopt route is a 403 that says how to enable it,
// and dtma migrate stops with exit code 1, adopting nothing.
func TestHardeningAdoptOff(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_ADOPT=off"}})
	sfx := strings.TrimPrefix(a.HostID, "e2e-")
	name := "Legacy Off " + sfx
	id, _ := rcLegacyContainer(t, a, img, strings.ReplaceAll(name, " ", "-"), "legacy-off")

	r := a.Expect(403, "POST", "/v1/adopt", map[string]any{"name": name, "image": img})
	if e := v1Err(t, r); e.Error.Code != "forbidden" || !strings.Contains(e.Error.Message, "DTMA_ADOPT") {
		t.Errorf("adopt with DTMA_ADOPT=off: %+v", e.Error)
	}
	data, _ := json.Marshal([]map[string]string{{"instance_name_on_toolbox": name, "docker_image_url": img, "account_tool_instance_id": dtma.NewUUID()}})
	mapping := filepath.Join(t.TempDir(), "mapping.json")
	if err := os.WriteFile(mapping, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := rcMigrate(t, a, mapping, false)
	if code != 1 || !strings.Contains(out, "DTMA_ADOPT") {
		t.Fatalf("migrate against DTMA_ADOPT=off: exit %d\n%s", code, out)
	}
	if list := rcList(t, a); len(list) != 0 {
		t.Fatalf("adoption disabled, yet recorded %+v", list)
	}
	if _, state, _, ok := rcStarted(t, a, id); !ok || state != "running" {
		t.Fatalf("legacy container is %q (exists %v)", state, ok)
	}
}

// By default an image whose registry host is loopback (IP literal or
// localhost) is a 400 on the image field, on both faces, before anything is
// pulled or recorded: the registry sees no request. Allowed with
// DTMA_REGISTRY_ALLOW, the same image is pulled and runs; an unknown tag is
// a 400 naming the image without the registry's text; an unreachable
// registry is a 503 about the registry (not Docker), and Docker is not
// marked down for it.
func TestHardeningRegistryPolicy(t *testing.T) {
	t.Parallel()
	c := dockertest.Client(t)
	img := EchoImage(t)
	sfx := uniqueSuffix()
	reg := testregistry.New(t, c, img, "dtma/hardening-"+sfx, "v1")
	down := testregistry.New(t, c, img, "dtma/hardening-down-"+sfx, "v1")
	down.SetDown(true)

	strict := StartAgent(t, AgentOptions{})
	port := strings.TrimPrefix(reg.Host(), "127.0.0.1:")
	for _, image := range []string{reg.Ref(), "localhost:" + port + "/dtma/hardening-" + sfx + ":v1", "[::1]:" + port + "/x:1"} {
		r := strict.Expect(400, "POST", "/v1/instances", map[string]any{"name": "Pull " + sfx, "image": image})
		if e := v1Err(t, r); e.Error.Field != "image" || !strings.Contains(e.Error.Message, "loopback") || !strings.Contains(e.Error.Message, "DTMA_REGISTRY_ALLOW") {
			t.Errorf("deploy %s: error %+v, want invalid on image naming loopback and DTMA_REGISTRY_ALLOW", image, e.Error)
		}
		r = strict.Expect(400, "POST", "/tools", legacyBody(image, "Pull Legacy "+sfx, "", nil, nil))
		if msg, _ := r.JSON(t)["message"].(string); !strings.HasPrefix(msg, "dockerImageUrl:") {
			t.Errorf("legacy deploy %s: message %q, want one on dockerImageUrl", image, msg)
		}
	}
	if reg.Requests() != 0 || reg.Connections() != 0 {
		t.Fatalf("a refused image reached the registry: %d requests, %d connections", reg.Requests(), reg.Connections())
	}
	if list := rcList(t, strict); len(list) != 0 {
		t.Fatalf("refused deploys recorded %+v", list)
	}

	open := StartAgent(t, AgentOptions{Env: []string{"DTMA_REGISTRY_ALLOW=127.0.0.1"}})
	r := open.Expect(201, "POST", "/v1/instances", map[string]any{"name": "Pulled " + sfx, "image": reg.Ref()})
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	if inst.DockerStatus != "running" || reg.Requests() == 0 {
		t.Fatalf("allowed pull: %+v after %d registry requests", inst, reg.Requests())
	}

	r = open.Expect(400, "POST", "/v1/instances", map[string]any{"name": "Unknown Tag " + sfx, "image": reg.Repo() + ":no-such-tag"})
	if e := v1Err(t, r); e.Error.Field != "image" || !strings.Contains(e.Error.Message, reg.Repo()+":no-such-tag") ||
		!strings.Contains(e.Error.Message, "not found") || strings.Contains(e.Error.Message, "manifest unknown") {
		t.Errorf("unknown tag: %+v, want invalid on image naming it, in our words", e.Error)
	}

	r = open.Expect(503, "POST", "/v1/instances", map[string]any{"name": "Down " + sfx, "image": down.Ref()})
	e := v1Err(t, r)
	if e.Error.Code != "unavailable" || !strings.Contains(e.Error.Message, "registry") ||
		strings.Contains(strings.ToLower(e.Error.Message), "docker") || strings.Contains(e.Error.Message, "SetDown") {
		t.Errorf("registry down: %+v, want unavailable about the registry, without its body", e.Error)
	}
	if down.Requests() == 0 {
		t.Errorf("the unreachable registry was not asked")
	}
	h := open.Expect(200, "GET", "/v1/health", nil).JSON(t)
	if h["docker_ok"] != true {
		t.Errorf("health after a registry failure: %v; Docker was marked down", h)
	}
	if strings.Contains(open.Logs(), "docker unreachable") {
		t.Errorf("a registry failure was logged as docker unreachable")
	}
	for _, n := range []string{"Unknown Tag " + sfx, "Down " + sfx} {
		if _, status := rcGet(t, open, n); status != 404 {
			t.Errorf("failed deploy %q left a record (status %d)", n, status)
		}
	}
}

// Names cannot take the shape of a reference: a UUID-shaped name is a 400 on
// both faces. Rows stored earlier under UUID-shaped names (imported here,
// as an older agent could have written them) keep resolving by name, but
// can no longer capture another instance's id or account id: GET, stop
// and the legacy status by those refs reach the instance they belong to.
func TestHardeningReferences(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	sfx := uniqueSuffix()
	acct := dtma.NewUUID()
	r := a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "Victim " + sfx, "account_tool_instance_id": acct, "image": img})
	var victim dtmahttp.Instance
	r.Decode(t, &victim)

	for _, n := range []string{victim.ID, acct, strings.ToUpper(dtma.NewUUID())} {
		r := a.Expect(400, "POST", "/v1/instances", map[string]any{"name": n, "image": img})
		if e := v1Err(t, r); e.Error.Field != "name" || !strings.Contains(e.Error.Message, "UUID") {
			t.Errorf("UUID-shaped name %s: %+v", n, e.Error)
		}
		r = a.Expect(400, "POST", "/tools", legacyBody(img, n, "", nil, nil))
		if msg, _ := r.JSON(t)["message"].(string); !strings.HasPrefix(msg, "instanceNameOnToolbox:") {
			t.Errorf("legacy UUID-shaped name %s: %q", n, msg)
		}
	}
	for _, n := range []string{".", ".."} {
		r := a.Expect(400, "POST", "/v1/instances", map[string]any{"name": n, "image": img})
		if e := v1Err(t, r); e.Error.Field != "name" {
			t.Errorf("name %q: %+v", n, e.Error)
		}
	}
	// Invalid UTF-8 is turned into U+FFFD by JSON decoding; refused, not
	// stored mangled.
	r = a.Expect(400, "POST", "/v1/instances", `{"name":"bad-`+"\xff"+`","image":"`+img+`"}`)
	if e := v1Err(t, r); e.Error.Field != "name" || !strings.Contains(e.Error.Message, "UTF-8") {
		t.Errorf("invalid UTF-8 name: %+v", e.Error)
	}
	r = a.Expect(400, "POST", "/v1/instances", map[string]any{"name": "Sctp " + sfx, "image": img, "ports": []map[string]any{{"container_port": 8080, "protocol": "sctp"}}})
	if e := v1Err(t, r); e.Error.Field != "ports[0].protocol" {
		t.Errorf("sctp port: %+v", e.Error)
	}
	r = a.Expect(400, "POST", "/tools", legacyBody(img, "Sctp Legacy "+sfx, "", nil, map[string]any{"8080/sctp": []map[string]string{{"HostPort": "0"}}}))
	if msg, _ := r.JSON(t)["message"].(string); !strings.Contains(msg, "8080/sctp") || !strings.Contains(msg, "sctp") {
		t.Errorf("legacy sctp binding: %q, want a 400 naming the binding", msg)
	}
	for _, image := range []string{":5000/x", "/x:1"} {
		r = a.Expect(400, "POST", "/v1/instances", map[string]any{"name": "No Host " + sfx, "image": image})
		if e := v1Err(t, r); e.Error.Field != "image" {
			t.Errorf("image %s: %+v", image, e.Error)
		}
	}

	// Rows an older agent stored under UUID-shaped names.
	oldName := dtma.NewUUID()
	rows := []map[string]any{}
	for i, n := range []string{acct, victim.ID, oldName} {
		rows = append(rows, map[string]any{
			"id": dtma.NewUUID(), "host_id": a.HostID, "name": n, "container_name": "dtma-old-" + sfx + "-" + string(rune('a'+i)),
			"spec": map[string]any{"image": img}, "spec_hash": "x", "ports": []any{},
			"desired_state": "stopped", "dtma_status": "missing", "tracking": "label",
			"observed":   map[string]any{"docker_status": "missing"},
			"created_at": time.Now().UTC(), "updated_at": time.Now().UTC(),
		})
	}
	data, _ := json.Marshal(map[string]any{"format": "dtma-registry/v1", "host_id": a.HostID, "exported_at": time.Now().UTC(), "instances": rows})
	file := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	env := []string{"DTMA_DATA_DIR=" + a.Opts.DataDir, "DTMA_HOST_ID=" + a.HostID}
	if out, stderr, code := dtmaCLI(t, env, "registry", "import", file); code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, stderr)
	}
	a.Restart()

	for _, ref := range []string{acct, strings.ToUpper(acct), victim.ID} {
		if got := rcMustGet(t, a, ref); got.ID != victim.ID {
			t.Errorf("GET /v1/instances/%s resolved %q (%s), want the victim %s", ref, got.Name, got.ID, victim.ID)
		}
		r := a.Expect(200, "GET", "/tools/"+ref+"/status", nil)
		if n, _ := jget(r.JSON(t), "data.instance_name_on_toolbox").(string); n != victim.Name {
			t.Errorf("GET /tools/%s/status resolved %q, want %q", ref, n, victim.Name)
		}
	}
	if got := rcMustGet(t, a, oldName); got.Name != oldName {
		t.Errorf("the old UUID-named row no longer resolves by its name: %+v", got)
	}
	r = a.Expect(200, "POST", "/v1/instances/"+acct+"/stop", nil)
	if id, _ := jget(r.JSON(t), "instance.id").(string); id != victim.ID {
		t.Errorf("stop by the victim's account id acted on %s", id)
	}
	if got := rcMustGet(t, a, victim.ID); got.DesiredState != "stopped" {
		t.Errorf("victim after stop by its account id: %+v", got)
	}
	a.Expect(204, "DELETE", "/v1/instances/"+oldName, nil)
	if _, status := rcGet(t, a, victim.ID); status != 200 {
		t.Errorf("deleting the old UUID-named row removed the victim")
	}
}

// No secret oracles: the dtma.spec-hash label is not the SHA-256 of the
// canonical spec with its env values and is the same whatever the values;
// a conflicting re-deploy says that env values differ and which names were
// added or removed, never a value and never the name of a variable whose
// only change is its value (both faces). Rows stored with the old hash are
// recomputed on load and re-deploys stay idempotent.
func TestHardeningNoSecretOracles(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	sfx := uniqueSuffix()
	secret := "s3cr3t-" + sfx
	name := "Oracle " + sfx
	body := map[string]any{"name": name, "image": img, "env": map[string]string{"API_KEY": secret, "ECHO": "oracle"}}
	var inst dtmahttp.Instance
	a.Expect(201, "POST", "/v1/instances", body).Decode(t, &inst)
	other := "Oracle Twin " + sfx
	var twin dtmahttp.Instance
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": other, "image": img, "env": map[string]string{"API_KEY": "different-" + sfx, "ECHO": "oracle"}}).Decode(t, &twin)

	label := func(id string) string {
		res := a.Inspect(id)
		if res == nil {
			t.Fatalf("container %s gone", id)
		}
		return res.Container.Config.Labels[dtma.LabelSpecHash]
	}
	spec := dtma.Spec{Image: img, Env: map[string]string{"API_KEY": secret, "ECHO": "oracle"}}
	h := label(inst.ContainerID)
	if h == "" || h == spec.LegacyHash() {
		t.Fatalf("spec-hash label %q is the SHA-256 over the env values", h)
	}
	if h2 := label(twin.ContainerID); h2 != h {
		t.Errorf("labels differ (%s vs %s) for specs that differ only in an env value: the label carries the value", h, h2)
	}

	guess := map[string]any{"name": name, "image": img, "env": map[string]string{"API_KEY": "guess-" + sfx, "ECHO": "oracle"}}
	r := a.Expect(409, "POST", "/v1/instances", guess)
	msg := v1Err(t, r).Error.Message
	if !strings.Contains(msg, "env values differ") || strings.Contains(msg, "API_KEY") || strings.Contains(msg, "ECHO") ||
		strings.Contains(msg, secret) || strings.Contains(msg, "guess-") {
		t.Errorf("value-only conflict says %q: want \"env values differ\" and no name or value", msg)
	}
	added := map[string]any{"name": name, "image": img, "env": map[string]string{"API_KEY": secret, "ECHO": "oracle", "EXTRA": "e"}}
	msg = v1Err(t, a.Expect(409, "POST", "/v1/instances", added)).Error.Message
	if !strings.Contains(msg, "env added: EXTRA") || strings.Contains(msg, "API_KEY") || strings.Contains(msg, "env values differ") {
		t.Errorf("added-variable conflict says %q", msg)
	}
	lr := a.Expect(409, "POST", "/tools", legacyBody(img, name, "", []string{"API_KEY=guess-" + sfx, "ECHO=oracle"}, nil))
	if m, _ := lr.JSON(t)["message"].(string); !strings.Contains(m, "env values differ") || strings.Contains(m, "API_KEY") || strings.Contains(string(lr.Body), secret) {
		t.Errorf("legacy value-only conflict says %q", m)
	}
	a.Expect(200, "POST", "/v1/instances", body)

	// A registry written by an older agent: the row's hash over env values.
	a.Stop()
	env := []string{"DTMA_DATA_DIR=" + a.Opts.DataDir, "DTMA_HOST_ID=" + a.HostID}
	out, stderr, code := dtmaCLI(t, env, "registry", "export")
	if code != 0 {
		t.Fatalf("export: %d %s", code, stderr)
	}
	var exp map[string]any
	if err := json.Unmarshal([]byte(out), &exp); err != nil {
		t.Fatal(err)
	}
	for _, row := range exp["instances"].([]any) {
		row.(map[string]any)["spec_hash"] = spec.LegacyHash()
	}
	data, _ := json.Marshal(exp)
	file := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a.Opts.DataDir, "dtma.db")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"dtma.db-wal", "dtma.db-shm"} {
		_ = os.Remove(filepath.Join(a.Opts.DataDir, f))
	}
	if out, stderr, code := dtmaCLI(t, env, "registry", "import", file); code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, stderr)
	}
	a.Restart()
	if got := rcMustGet(t, a, name); got.ContainerID != inst.ContainerID {
		t.Fatalf("after the old-hash import: %+v", got)
	}
	a.Expect(200, "POST", "/v1/instances", body)
	a.Expect(409, "POST", "/v1/instances", guess)
	Eventually(t, 30*time.Second, "the old hash rewritten in the registry", func() bool {
		out, _, code := dtmaCLI(t, env, "registry", "export")
		return code == 0 && strings.Contains(out, h) && !strings.Contains(out, spec.LegacyHash())
	})
	if got := label(inst.ContainerID); got != h {
		t.Errorf("the container was recreated: label %s", got)
	}
}
