package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/moby/moby/client"
)

// TestSecretsNeverLeak deploys on both faces with distinctive secret env
// values and checks that they reach the container and nothing else: no API
// answer (deploy, re-deploy, get, lists, status, fleet, lifecycle, logs,
// health, conflicts, rejections), no container label, no line of the
// agent's log — also across a container recreated from the registry.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	secret := func() string {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		return "s3cr3t-" + hex.EncodeToString(b)
	}
	legacySecret, v1Secret, changedSecret, rejectedSecret := secret(), secret(), secret(), secret()
	secrets := []string{legacySecret, v1Secret, changedSecret, rejectedSecret}

	var bodies []string
	do := func(want int, method, path string, body any) *Response {
		t.Helper()
		r := a.Expect(want, method, path, body)
		bodies = append(bodies, method+" "+path+" -> "+string(r.Body))
		return r
	}

	// Legacy deploy.
	lname, lacct, lport := "Secret Legacy "+uniqueSuffix(), dtma.NewUUID(), freePort(t)
	lbody := legacyBody(img, lname, lacct, []string{"ECHO=plain", "API_KEY=" + legacySecret},
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(lport)}}})
	lcid := str(jget(do(201, "POST", "/tools", lbody).JSON(t), "data.container_id"))
	do(200, "POST", "/tools", lbody)

	// v1 deploy.
	vname, vport := "Secret V1 "+uniqueSuffix(), freePort(t)
	vbody := map[string]any{"name": vname, "image": img, "env": map[string]string{"ECHO": "plain", "DB_PASSWORD": v1Secret},
		"ports": []map[string]any{{"container_port": 8080, "host_port": vport}}}
	r := do(201, "POST", "/v1/instances", vbody)
	vcid := str(r.JSON(t)["container_id"])
	do(200, "POST", "/v1/instances", vbody)

	// The secrets are in the containers' env.
	Eventually(t, 30*time.Second, "the legacy secret inside its container", func() bool { return HTTPGet(lport, "/env/API_KEY") == legacySecret })
	Eventually(t, 30*time.Second, "the v1 secret inside its container", func() bool { return HTTPGet(vport, "/env/DB_PASSWORD") == v1Secret })

	lref, vref := url.PathEscape(lname), url.PathEscape(vname)
	for _, p := range []string{
		"/status", "/tools/status", "/tools/" + lref + "/status", "/tools/" + lacct + "/status", "/tools/" + vref + "/status",
		"/tools/" + lref + "/logs?tail=100", "/v1/instances", "/v1/instances/" + lacct, "/v1/instances/" + vref,
		"/v1/instances/" + vref + "/logs", "/v1/fleet/instances", "/v1/health",
	} {
		do(200, "GET", p, nil)
	}
	for _, verb := range []string{"stop", "start", "restart"} {
		do(200, "POST", "/tools/"+lref+"/"+verb, nil)
		do(200, "POST", "/v1/instances/"+vref+"/"+verb, nil)
	}

	// Conflicting env value changes: 409 saying env values differ, naming
	// neither the variable nor its values (naming it would confirm a
	// guessed secret variable by variable).
	r = do(409, "POST", "/tools", legacyBody(img, lname, lacct, []string{"ECHO=plain", "API_KEY=" + changedSecret},
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(lport)}}}))
	if !strings.Contains(string(r.Body), "env values differ") || strings.Contains(string(r.Body), "API_KEY") {
		t.Errorf("legacy 409 names the variable or does not say env values differ: %s", r.Body)
	}
	vchanged := map[string]any{"name": vname, "image": img, "env": map[string]string{"ECHO": "plain", "DB_PASSWORD": changedSecret},
		"ports": []map[string]any{{"container_port": 8080, "host_port": vport}}}
	r = do(409, "POST", "/v1/instances", vchanged)
	if !strings.Contains(string(r.Body), "env values differ") || strings.Contains(string(r.Body), "DB_PASSWORD") {
		t.Errorf("v1 409 names the variable or does not say env values differ: %s", r.Body)
	}
	// Rejected deploys carrying a secret.
	do(400, "POST", "/v1/instances", map[string]any{"name": "Rejected " + uniqueSuffix(), "image": img,
		"env": map[string]string{"GOOD": rejectedSecret, "1BAD": rejectedSecret}})
	do(400, "POST", "/tools", legacyBody(img, "Rejected "+uniqueSuffix(), "", []string{"GOOD=" + rejectedSecret, "BAD NAME=" + rejectedSecret}, nil))
	do(400, "POST", "/v1/instances", `{"name": "Rejected", "image": "`+img+`", "env": {"K": "`+rejectedSecret+`"`)

	// A container removed behind the agent's back is recreated from the
	// registry with its secret, and the recreation logs no secret either.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Docker.ContainerRemove(ctx, vcid, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatalf("docker rm: %v", err)
	}
	Eventually(t, 30*time.Second, "the removed container recreated with its secret", func() bool { return HTTPGet(vport, "/env/DB_PASSWORD") == v1Secret })
	var newVcid string
	Eventually(t, 30*time.Second, "the recreated container recorded", func() bool {
		newVcid = str(a.Expect(200, "GET", "/v1/instances/"+vref, nil).JSON(t)["container_id"])
		return newVcid != "" && newVcid != vcid && a.Inspect(newVcid) != nil
	})
	do(200, "GET", "/v1/instances/"+vref, nil)
	do(200, "GET", "/tools/status", nil)

	for _, b := range bodies {
		for _, s := range secrets {
			if strings.Contains(b, s) {
				t.Errorf("an API answer contains a secret: %s", b)
			}
		}
	}

	// Labels carry env names, never values.
	for _, id := range []string{lcid, newVcid} {
		ins := a.Inspect(id)
		if ins == nil {
			t.Fatalf("container %s missing", id)
		}
		for k, v := range ins.Container.Config.Labels {
			for _, s := range secrets {
				if strings.Contains(k, s) || strings.Contains(v, s) {
					t.Errorf("container %s label %s=%s contains a secret", id, k, v)
				}
			}
		}
		if names := ins.Container.Config.Labels[dtma.LabelEnvNames]; names != "API_KEY,ECHO" && names != "DB_PASSWORD,ECHO" {
			t.Errorf("label %s = %q, want the env names", dtma.LabelEnvNames, names)
		}
	}

	// The agent's own log (debug level) holds no secret and no token.
	logs := a.Logs()
	if !strings.Contains(logs, "recreat") || !strings.Contains(logs, "deploy") {
		t.Errorf("the agent log does not show the deploys and the recreation; is it the right log?\n%s", logs)
	}
	for _, s := range append(secrets, Token) {
		if strings.Contains(logs, s) {
			t.Errorf("the agent's log contains %.14s...", s)
		}
	}
}
