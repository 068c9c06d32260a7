package main

import (
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	f := newFakeAgent(t)
	insts := testInstances("h1")
	f.handle("GET", "/v1/instances/alpha", 200, insts[0])
	f.handle("GET", "/v1/instances/beta tool", 200, insts[1])
	out, _, err := runCLI(t, f.env(), "inspect", "alpha", "beta tool")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "inspect.golden", out)

	out, _, err = runCLI(t, f.env(), "inspect", "--format", "{{.Name}} {{.ShortContainerID}} {{json .Ports}}", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if want := `alpha 0123456789ab [{"container_port":8080,"protocol":"tcp","host_port":31001,"host_ip":"127.0.0.1"}]` + "\n"; out != want {
		t.Errorf("--format: %q, want %q", out, want)
	}
	out, _, err = runCLI(t, f.env(), "inspect", "-f", "json", "alpha")
	if err != nil || !strings.HasPrefix(out, `{"id":"11111111-`) || strings.Count(out, "\n") != 1 {
		t.Errorf("-f json: %q, %v", out, err)
	}

	// One unknown ref: nothing printed, the agent's error, exit 1.
	out, _, err = runCLI(t, f.env(), "inspect", "alpha", "nope")
	if err == nil || out != "" || exitCode(err) != 1 || !strings.Contains(cliMessage(err), "not_found (404)") {
		t.Errorf("unknown ref: out %q, err %v", out, err)
	}
	if _, _, err := runCLI(t, f.env(), "inspect"); exitCode(err) != 2 {
		t.Errorf("inspect without a ref: exit %d, want 2", exitCode(err))
	}
	if _, _, err := runCLI(t, f.env(), "inspect", "-f", "{{.Name", "alpha"); exitCode(err) != 2 {
		t.Errorf("bad template: exit %d, want 2", exitCode(err))
	}
}
