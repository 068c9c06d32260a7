package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// authRoute is one route the agent serves, with a body that would act if
// the request got through.
type authRoute struct {
	method, path string
	body         any
}

// everyRoute lists every route but GET /health, legacy and v1. ref names a
// running instance; img is the echo image.
func everyRoute(ref, img string) []authRoute {
	legacyDeploy := legacyBody(img, "Auth Bypass "+uniqueSuffix(), "", nil, nil)
	v1Deploy := map[string]any{"name": "Auth Bypass " + uniqueSuffix(), "image": img}
	return []authRoute{
		{"GET", "/status", nil},
		{"POST", "/tools", legacyDeploy},
		{"GET", "/tools/status", nil},
		{"POST", "/tools/" + ref + "/start", nil},
		{"POST", "/tools/" + ref + "/stop", nil},
		{"POST", "/tools/" + ref + "/restart", nil},
		{"GET", "/tools/" + ref + "/status", nil},
		{"GET", "/tools/" + ref + "/logs?tail=5", nil},
		{"DELETE", "/tools/" + ref, nil},

		{"GET", "/v1/openapi.json", nil},
		{"GET", "/v1/health", nil},
		{"POST", "/v1/instances", v1Deploy},
		{"GET", "/v1/instances", nil},
		{"GET", "/v1/instances/" + ref, nil},
		{"POST", "/v1/instances/" + ref + "/start", nil},
		{"POST", "/v1/instances/" + ref + "/stop", nil},
		{"POST", "/v1/instances/" + ref + "/restart", nil},
		{"DELETE", "/v1/instances/" + ref, nil},
		{"GET", "/v1/instances/" + ref + "/logs", nil},
		{"GET", "/v1/fleet/instances", nil},
		{"POST", "/v1/adopt", map[string]any{"name": "Auth Bypass Adopt", "container": "nothing"}},

		{"GET", "/no/such/route", nil},
		{"GET", "/v1/no/such/route", nil},
	}
}

// TestAuthEveryRoute: without a well-formed bearer header every route
// answers 401, with a wrong token 403, in its face's envelope, and nothing
// happens; GET /health needs no token.
func TestAuthEveryRoute(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	// Hundreds of refusals from 127.0.0.1: the failed-auth limiter (tested
	// in hardening_http_test.go) would answer most of them 429.
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_AUTH_FAILURE_LIMIT=0"}})
	acct := dtma.NewUUID()
	r := a.Expect(201, "POST", "/tools", legacyBody(img, "Auth Target "+uniqueSuffix(), acct, nil, nil))
	cid := str(jget(r.JSON(t), "data.container_id"))
	started := startedAt(t, a, cid)
	names, containers := v1Names(t, a), hostContainers(a)

	wrong := strings.Repeat("ab", 32) // well-formed, 64 hex characters, not the token
	cases := []struct {
		auth   string
		status int
		code   string
	}{
		{"", 401, "unauthorized"},
		{"Basic x", 401, "unauthorized"},
		{"Basic " + Token, 401, "unauthorized"},
		{"Bearer", 401, "unauthorized"},
		{"Bearer ", 401, "unauthorized"},
		{"Bearer    ", 401, "unauthorized"},
		{Token, 401, "unauthorized"},
		{"Bearer " + wrong, 403, "forbidden"},
		{"Bearer " + Token + "x", 403, "forbidden"},
		{"Bearer " + Token[:len(Token)-1], 403, "forbidden"},
	}
	for _, rt := range everyRoute(acct, img) {
		for _, c := range cases {
			r := a.DoAuth(rt.method, rt.path, rt.body, c.auth)
			if r.Status != c.status {
				t.Errorf("%s %s with %q: status %d, want %d: %s", rt.method, rt.path, c.auth, r.Status, c.status, r.Body)
				continue
			}
			body := r.JSON(t)
			if strings.HasPrefix(rt.path, "/v1/") {
				if jget(body, "error.code") != c.code || str(jget(body, "error.message")) == "" {
					t.Errorf("%s %s with %q: body %s, want error.code %s", rt.method, rt.path, c.auth, r.Body, c.code)
				}
			} else if body["success"] != false || str(body["message"]) == "" {
				t.Errorf("%s %s with %q: body %s, want the legacy error envelope", rt.method, rt.path, c.auth, r.Body)
			}
			if strings.Contains(string(r.Body), Token) {
				t.Errorf("%s %s: the answer echoes the token", rt.method, rt.path)
			}
		}
	}

	// Nothing got through: no deploy, no stop, no restart, no delete.
	if got := v1Names(t, a); !slices.Equal(got, names) {
		t.Errorf("instances changed: %v -> %v", names, got)
	}
	if got := hostContainers(a); !slices.Equal(got, containers) {
		t.Errorf("containers changed: %v -> %v", containers, got)
	}
	if now := startedAt(t, a, cid); now != started {
		t.Errorf("the target container was restarted (StartedAt %s -> %s)", started, now)
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Errorf("the target container is not running")
	}

	// The right token passes on every read route.
	for _, p := range []string{"/status", "/tools/status", "/tools/" + acct + "/status", "/v1/openapi.json", "/v1/health", "/v1/instances", "/v1/fleet/instances"} {
		a.Expect(200, "GET", p, nil)
	}
	if r := a.DoAuth("GET", "/v1/instances", nil, "bearer "+Token); r.Status != 200 {
		t.Errorf("scheme is case-insensitive: got %d", r.Status)
	}

	// /health is public and plain.
	for _, auth := range []string{"", "Bearer " + wrong} {
		r := a.DoAuth("GET", "/health", nil, auth)
		if r.Status != 200 || string(r.Body) != "OK" {
			t.Errorf("GET /health with %q: %d %q, want 200 OK", auth, r.Status, r.Body)
		}
	}
}

// TestAuthBothTokens: DTMA_BEARER_TOKEN and BACKEND_TO_DTMA_API_KEY are
// both accepted; any other token is not.
func TestAuthBothTokens(t *testing.T) {
	t.Parallel()
	other := "backend-" + strings.Repeat("cd", 28)
	a := StartAgent(t, AgentOptions{Env: []string{"BACKEND_TO_DTMA_API_KEY=" + other}})
	for _, tok := range []string{Token, other} {
		for _, p := range []string{"/tools/status", "/status", "/v1/instances"} {
			if r := a.DoAuth("GET", p, nil, "Bearer "+tok); r.Status != 200 {
				t.Errorf("GET %s with token %.12s...: %d %s", p, tok, r.Status, r.Body)
			}
		}
	}
	// Deploy with one, manage with the other.
	img := EchoImage(t)
	name := "Two Tokens " + uniqueSuffix()
	if r := a.DoAuth("POST", "/tools", legacyBody(img, name, "", nil, nil), "Bearer "+other); r.Status != 201 {
		t.Fatalf("deploy with BACKEND_TO_DTMA_API_KEY: %d %s", r.Status, r.Body)
	}
	if r := a.DoAuth("POST", "/v1/instances/"+strings.ReplaceAll(name, " ", "%20")+"/stop", nil, "Bearer "+Token); r.Status != 200 {
		t.Fatalf("stop with DTMA_BEARER_TOKEN: %d %s", r.Status, r.Body)
	}
	if r := a.DoAuth("GET", "/tools/status", nil, "Bearer "+other+"x"); r.Status != 403 {
		t.Errorf("a third token: %d, want 403", r.Status)
	}

	// BACKEND_TO_DTMA_API_KEY alone is enough to run the agent.
	b := StartAgent(t, AgentOptions{Env: []string{"DTMA_BEARER_TOKEN=", "BACKEND_TO_DTMA_API_KEY=" + other}})
	if r := b.DoAuth("GET", "/tools/status", nil, "Bearer "+other); r.Status != 200 {
		t.Errorf("agent with only BACKEND_TO_DTMA_API_KEY: %d %s", r.Status, r.Body)
	}
	if r := b.DoAuth("GET", "/tools/status", nil, "Bearer "+Token); r.Status != 403 {
		t.Errorf("agent with only BACKEND_TO_DTMA_API_KEY accepts the unset DTMA_BEARER_TOKEN's value: %d", r.Status)
	}
}

// TestAuthPublicStatus: DTMA_PUBLIC_STATUS=true serves GET /status without
// a token (the legacy behaviour) and nothing else.
func TestAuthPublicStatus(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_PUBLIC_STATUS=true", "DTMA_AUTH_FAILURE_LIMIT=0"}})
	r := a.DoAuth("GET", "/status", nil, "")
	if r.Status != 200 || r.JSON(t)["status"] != "healthy" {
		t.Fatalf("public GET /status: %d %s", r.Status, r.Body)
	}
	for _, rt := range everyRoute("whatever", EchoImage(t)) {
		if rt.path == "/status" {
			continue
		}
		if r := a.DoAuth(rt.method, rt.path, rt.body, ""); r.Status != 401 {
			t.Errorf("%s %s without a token on a public-status agent: %d, want 401", rt.method, rt.path, r.Status)
		}
	}
	// By default /status is not public.
	b := StartAgent(t, AgentOptions{})
	if r := b.DoAuth("GET", "/status", nil, ""); r.Status != 401 {
		t.Errorf("GET /status without a token on a default agent: %d, want 401", r.Status)
	}
}

// TestAuthNoTokenRefusesToStart: `dtma serve` without any token exits
// non-zero, says why, and never listens.
func TestAuthNoTokenRefusesToStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value string }{{"unset", ""}, {"blank", "   "}} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath, "serve")
			cmd.Env = []string{
				"PATH=/usr/bin:/bin",
				"DTMA_LISTEN=127.0.0.1:" + strconv.Itoa(port),
				"DTMA_DATA_DIR=" + t.TempDir(),
				"DTMA_HOST_ID=e2e-notoken-" + uniqueSuffix(),
			}
			if tc.value != "" {
				cmd.Env = append(cmd.Env, "DTMA_BEARER_TOKEN="+tc.value, "BACKEND_TO_DTMA_API_KEY="+tc.value)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("dtma serve without a token kept running")
			}
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("dtma serve without a token: err %v, want a non-zero exit", err)
			}
			msg := stderr.String()
			for _, s := range []string{"token", "DTMA_BEARER_TOKEN", "BACKEND_TO_DTMA_API_KEY"} {
				if !strings.Contains(msg, s) {
					t.Errorf("stderr %q does not mention %q", msg, s)
				}
			}
			if HTTPGet(port, "/health") != "" {
				t.Errorf("something answers on the port the tokenless agent was given")
			}
		})
	}
}
