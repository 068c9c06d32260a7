package main

import (
	"net/http"
	"testing"
)

func TestLogs(t *testing.T) {
	f := newFakeAgent(t)
	var query string
	f.routes["GET /v1/instances/alpha/logs"] = func(w http.ResponseWriter, _ []byte) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("line 1\nline 2\n"))
	}
	h := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		h.ServeHTTP(w, r)
	})
	out, _, err := runCLI(t, f.env(), "logs", "--tail", "2", "alpha")
	if err != nil || out != "line 1\nline 2\n" || query != "tail=2" {
		t.Errorf("logs --tail 2: %q, query %q, %v", out, query, err)
	}
	if _, _, err := runCLI(t, f.env(), "logs", "-f", "alpha"); err != nil || query != "follow=true&tail=all" {
		t.Errorf("logs -f: query %q, %v", query, err)
	}
	for _, bad := range []string{"-1", "x", "1.5"} {
		if _, _, err := runCLI(t, f.env(), "logs", "--tail", bad, "alpha"); exitCode(err) != 2 {
			t.Errorf("--tail %s: exit %d, want 2", bad, exitCode(err))
		}
	}
	if _, _, err := runCLI(t, f.env(), "logs", "nope"); err == nil || exitCode(err) != 1 {
		t.Errorf("logs of an unknown instance: %v", err)
	}
}
