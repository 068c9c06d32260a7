package main

import (
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/health", 200, map[string]any{"version": "1.2.3", "host_id": "h1", "docker_ok": true, "registry_ok": true})
	out, _, err := runCLI(t, f.env(), "version")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "client: dev (go") || lines[1] != "agent:  1.2.3 (host h1)" {
		t.Errorf("version:\n%s", out)
	}
	out, _, err = runCLI(t, map[string]string{}, "version", "--client")
	if err != nil || !strings.HasPrefix(out, "client: dev") || strings.Contains(out, "agent") {
		t.Errorf("version --client: %q %v", out, err)
	}
	// No agent: the client line, then an error (exit 1).
	env := f.env()
	f.srv.Close()
	out, _, err = runCLI(t, env, "version")
	if err == nil || exitCode(err) != 1 || !strings.HasPrefix(out, "client: ") {
		t.Errorf("no agent: %q %v", out, err)
	}
}

func TestUsageExitCodes(t *testing.T) {
	for _, args := range [][]string{{"nosuchcommand"}, {"ls", "--nosuchflag"}, {"version", "extra"}, {"backup"}, {"restore"}} {
		_, _, err := runCLI(t, map[string]string{}, args...)
		if exitCode(err) != 2 {
			t.Errorf("%q: err %v, exit %d, want 2", args, err, exitCode(err))
		}
	}
	if exitCode(nil) != 0 {
		t.Error("exitCode(nil) != 0")
	}
}

func TestCompletion(t *testing.T) {
	out, _, err := runCLI(t, map[string]string{}, "completion", "bash")
	if err != nil || !strings.Contains(out, "__start_dtma") {
		t.Errorf("completion bash: %v\n%.200s", err, out)
	}
}
