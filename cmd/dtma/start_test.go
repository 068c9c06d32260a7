package main

import (
	"net/http"
	"strings"
	"testing"
)

func actionAnswer(changed bool, msg string) map[string]any {
	return map[string]any{"changed": changed, "message": msg, "instance": testInstances("h1")[0]}
}

func TestStartStopRestart(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("POST", "/v1/instances/alpha/start", 200, actionAnswer(false, "already running"))
	f.handle("POST", "/v1/instances/alpha/stop", 200, actionAnswer(true, "stopped"))
	f.handle("POST", "/v1/instances/alpha/restart", 200, actionAnswer(true, "restarted"))

	out, errOut, err := runCLI(t, f.env(), "start", "alpha")
	if err != nil || out != "alpha\n" || errOut != "alpha: already running\n" {
		t.Errorf("start: %q %q %v", out, errOut, err)
	}
	out, _, err = runCLI(t, f.env(), "restart", "alpha")
	if err != nil || out != "alpha\n" {
		t.Errorf("restart: %q %v", out, err)
	}
	if _, _, err = runCLI(t, f.env(), "stop", "-t", "3", "alpha"); err != nil {
		t.Errorf("stop -t 3: %v", err)
	}
	if _, _, err = runCLI(t, f.env(), "stop", "alpha"); err != nil {
		t.Errorf("stop: %v", err)
	}
	var queries []string
	for _, r := range f.requests() {
		queries = append(queries, r.Method+" "+r.Path)
	}
	want := "POST /v1/instances/alpha/start|POST /v1/instances/alpha/restart|POST /v1/instances/alpha/stop|POST /v1/instances/alpha/stop"
	if strings.Join(queries, "|") != want {
		t.Errorf("requests %q", queries)
	}

	// Several refs: carry on past a failure, name it, exit 1.
	out, errOut, err = runCLI(t, f.env(), "start", "nope", "alpha")
	if err == nil || exitCode(err) != 1 || out != "alpha\n" || !strings.Contains(errOut, "nope: not_found (404)") {
		t.Errorf("start nope alpha: out %q stderr %q err %v", out, errOut, err)
	}
	if _, _, err := runCLI(t, f.env(), "stop", "-t", "-1", "alpha"); exitCode(err) != 2 {
		t.Errorf("stop -t -1: exit %d, want 2", exitCode(err))
	}
	for _, c := range []string{"start", "stop", "restart", "rm"} {
		if _, _, err := runCLI(t, f.env(), c); exitCode(err) != 2 {
			t.Errorf("%s without a ref: exit %d, want 2", c, exitCode(err))
		}
	}
}

func TestStopTimeoutQuery(t *testing.T) {
	var got []string
	f := newFakeAgent(t)
	srvHandler := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery)
		srvHandler.ServeHTTP(w, r)
	})
	f.handle("POST", "/v1/instances/alpha/stop", 200, actionAnswer(true, "stopped"))
	if _, _, err := runCLI(t, f.env(), "stop", "-t", "3", "alpha"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, f.env(), "stop", "alpha"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "timeout=3|" {
		t.Errorf("queries %q, want timeout=3 then none (the agent's default)", got)
	}
}

func TestRm(t *testing.T) {
	f := newFakeAgent(t)
	insts := testInstances("h1")
	f.handle("GET", "/v1/instances/alpha", 200, insts[0]) // running
	f.handle("GET", "/v1/instances/beta tool", 200, insts[1])
	f.handle("DELETE", "/v1/instances/alpha", 204, nil)
	f.handle("DELETE", "/v1/instances/beta tool", 204, nil)

	// Without -f a running instance is refused and not deleted.
	_, _, err := runCLI(t, f.env(), "rm", "alpha")
	if err == nil || !strings.Contains(err.Error(), "rm -f") {
		t.Errorf("rm of a running instance: %v", err)
	}
	for _, r := range f.requests() {
		if r.Method == "DELETE" {
			t.Fatalf("rm without -f deleted a running instance")
		}
	}
	out, _, err := runCLI(t, f.env(), "rm", "beta tool")
	if err != nil || out != "beta tool\n" {
		t.Errorf("rm of an exited instance: %q %v", out, err)
	}
	out, _, err = runCLI(t, f.env(), "rm", "-f", "alpha")
	if err != nil || out != "alpha\n" {
		t.Errorf("rm -f: %q %v", out, err)
	}
	var deletes []string
	for _, r := range f.requests() {
		if r.Method == "DELETE" {
			deletes = append(deletes, r.Path)
		}
	}
	if strings.Join(deletes, "|") != "/v1/instances/beta tool|/v1/instances/alpha" {
		t.Errorf("deletes %q", deletes)
	}
}
