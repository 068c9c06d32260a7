package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

func TestDeploySendsTheRequestAndPrintsTheInstance(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("POST", "/v1/instances", 201, testInstances("h1")[1])
	envFile := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(envFile, []byte("# comment\n\nFROM_FILE=1\nOVERRIDDEN=file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := f.env()
	env["PASSED"] = "from-env"
	out, errOut, err := runCLI(t, env, "deploy", "ghcr.io/acme/beta:2", "--name", "beta tool",
		"--account-id", "33333333-3333-4333-8333-333333333333",
		"--env-file", envFile, "-e", "OVERRIDDEN=flag", "-e", "PASSED", "-e", "EMPTY=",
		"-p", "31002:8080", "-p", "127.0.0.1:31053:53/udp", "-p", "9000", "--pull", "never")
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	golden(t, "deploy.golden", out)
	if errOut != "created beta tool\n" {
		t.Errorf("stderr = %q", errOut)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != "/v1/instances" {
		t.Fatalf("requests = %+v", reqs)
	}
	var got dtmahttp.DeployRequest
	if err := json.Unmarshal(reqs[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	want := dtmahttp.DeployRequest{
		Name: "beta tool", AccountToolInstanceID: "33333333-3333-4333-8333-333333333333", Image: "ghcr.io/acme/beta:2",
		Env: map[string]string{"FROM_FILE": "1", "OVERRIDDEN": "flag", "PASSED": "from-env", "EMPTY": ""},
		Ports: []dtma.Port{
			{ContainerPort: 8080, Protocol: "tcp", HostPort: 31002},
			{ContainerPort: 53, Protocol: "udp", HostPort: 31053, HostIP: "127.0.0.1"},
			{ContainerPort: 9000, Protocol: "tcp"},
		},
		PullPolicy: "never",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request body\n%+v\nwant\n%+v", got, want)
	}
	// Env values never reach the output.
	if strings.Contains(out+errOut, "from-env") {
		t.Errorf("an env value was printed: %q %q", out, errOut)
	}
}

func TestDeployExistingAndQuiet(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("POST", "/v1/instances", 200, testInstances("h1")[0])
	out, errOut, err := runCLI(t, f.env(), "deploy", "ghcr.io/acme/alpha:1", "--name", "alpha", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if out != "alpha\n" || !strings.Contains(errOut, "exists") {
		t.Errorf("out %q, stderr %q", out, errOut)
	}
}

// Bad flags are usage errors (exit code 2) and nothing is sent; the
// agent's refusal is printed with its code and field, exit code 1.
func TestDeployErrors(t *testing.T) {
	f := newFakeAgent(t)
	for _, args := range [][]string{
		{"deploy", "img"}, // no --name
		{"deploy", "--name", "x"},
		{"deploy", "img", "--name", "x", "-p", "70000:80"},
		{"deploy", "img", "--name", "x", "-p", "80/sctp"},
		{"deploy", "img", "--name", "x", "-p", "nothost:1:80"},
		{"deploy", "img", "--name", "x", "-e", "=v"},
		{"deploy", "img", "--name", "x", "--env-file", "/nonexistent"},
		{"deploy", "img", "--name", "x", "--no-such-flag"},
	} {
		_, _, err := runCLI(t, f.env(), args...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("%q: err %v, exit %d; want a usage error (2)", args, err, exitCode(err))
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent for bad flags", n)
	}
	f.routes["POST /v1/instances"] = func(w http.ResponseWriter, _ []byte) {
		writeTestJSON(w, 400, map[string]any{"error": map[string]any{"code": "invalid", "field": "image", "message": "image: registry 10.0.0.1 is private"}})
	}
	_, _, err := runCLI(t, f.env(), "deploy", "10.0.0.1/x", "--name", "x")
	if err == nil || exitCode(err) != 1 || cliMessage(err) != "invalid (400): image: registry 10.0.0.1 is private" {
		t.Errorf("agent refusal: err %v (%q), exit %d", err, cliMessage(err), exitCode(err))
	}
}

// TestDeployHealthFlags: --health and its companions become the v1 health
// object; without them the request carries none (the agent's default);
// a type it cannot be is a usage error (exit 2) and nothing is sent.
func TestDeployHealthFlags(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("POST", "/v1/instances", 201, testInstances("h1")[1])
	_, _, err := runCLI(t, f.env(), "deploy", "img:1", "--name", "beta tool", "-p", "8080",
		"--health", "mcp:/mcp", "--health-interval", "2s", "--health-timeout", "500ms", "--health-retries", "2",
		"--health-start-period", "10s", "--health-restart")
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	_, _, err = runCLI(t, f.env(), "deploy", "img:1", "--name", "beta tool")
	if err != nil {
		t.Fatalf("deploy without health flags: %v", err)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	var with, without dtmahttp.DeployRequest
	if json.Unmarshal(reqs[0].Body, &with) != nil || json.Unmarshal(reqs[1].Body, &without) != nil {
		t.Fatal("request bodies are not JSON")
	}
	want := &dtmahttp.HealthCheckRequest{Type: "mcp", Path: "/mcp", Interval: 2, Timeout: 0.5, Retries: 2, StartPeriod: 10, OnUnhealthy: "restart"}
	if !reflect.DeepEqual(with.Health, want) {
		t.Errorf("health = %+v, want %+v", with.Health, want)
	}
	if without.Health != nil {
		t.Errorf("no --health flag sent health %+v", without.Health)
	}
	for _, args := range [][]string{{"--health", "ping"}, {"--health", "tcp:/x"}, {"--health-retries", "3"}} {
		_, _, err := runCLI(t, f.env(), append([]string{"deploy", "img:1", "--name", "x"}, args...)...)
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--health") {
			t.Errorf("%v: err %v (exit %d), want a usage error naming --health", args, err, exitCode(err))
		}
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests after the refused ones, want 2", n)
	}
}
