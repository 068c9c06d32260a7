package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	dtmahttp "github.com/agentopia/dtma/http"
)

func doctorLines(t *testing.T, o doctorOptions) (map[string]string, error) {
	t.Helper()
	var out bytes.Buffer
	o.out = &out
	err := runDoctor(context.Background(), o)
	lines := map[string]string{}
	var last string
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "fix:" {
			lines[last] += "\n" + l
			continue
		}
		if len(f) >= 2 {
			name := f[1]
			if name == "data" {
				name = "data dir"
			}
			lines[name] = l
			last = name
		}
	}
	return lines, err
}

func TestDoctorAllGood(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET", "/v1/instances", 200, map[string]any{"instances": []any{}})
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dtma.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	lo := freePortBlock(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := doctorOptions{
		cfg: &config{Listen: ":30000", DataDir: dir, Tokens: []string{fakeToken + "-long-enough"}, PortRangeStart: lo, PortRangeEnd: lo + 4},
		docker: func(context.Context) (docker.DaemonInfo, error) {
			return docker.DaemonInfo{ServerVersion: "20.10.24", SystemTime: now}, nil
		},
		registry: func(context.Context) (string, error) { return "sqlite:" + dir + "/dtma.db", nil },
		client:   dtmahttp.NewClient(f.srv.URL, fakeToken),
		now:      func() time.Time { return now },
	}
	lines, err := doctorLines(t, o)
	if err != nil {
		t.Fatalf("doctor: %v\n%v", err, lines)
	}
	for _, name := range []string{"docker", "registry", "token", "ports", "data dir"} {
		if !strings.HasPrefix(lines[name], "ok") {
			t.Errorf("%s: %q, want ok", name, lines[name])
		}
	}
	if !strings.Contains(lines["ports"], "5 of 5 ports free") || !strings.Contains(lines["docker"], "Engine 20.10.24") {
		t.Errorf("details: %v", lines)
	}
}

func TestDoctorFailuresSayWhatToFix(t *testing.T) {
	f := newFakeAgent(t) // refuses any other token with 403
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dtma.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // whatever the umask
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := doctorOptions{
		cfg: &config{Listen: ":31500", DataDir: dir, Tokens: []string{"other-token-0123456789"}, PortRangeStart: 31000, PortRangeEnd: 31999},
		docker: func(context.Context) (docker.DaemonInfo, error) {
			return docker.DaemonInfo{ServerVersion: "20.10.24", SystemTime: now.Add(time.Minute)}, nil
		},
		registry: func(context.Context) (string, error) {
			return "", dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable: connection refused")
		},
		client: dtmahttp.NewClient(f.srv.URL, "other-token-0123456789"),
		now:    func() time.Time { return now },
	}
	lines, err := doctorLines(t, o)
	if err == nil || !strings.Contains(err.Error(), "5 of 5 checks failed") {
		t.Fatalf("doctor: %v\n%v", err, lines)
	}
	want := map[string][]string{
		"docker":   {"clock skew 1m0s", "fix: synchronise the clocks"},
		"registry": {"connection refused", "fix: check DTMA_REGISTRY_URL"},
		"token":    {"refuses the token", "forbidden (403)", "fix: set DTMA_TOKEN"},
		"ports":    {"holds the agent's own port 31500", "fix: move DTMA_PORT_RANGE"},
		"data dir": {dir + " is 0755", filepath.Join(dir, "dtma.db") + " is 0644", "fix: chmod 700"},
	}
	for name, parts := range want {
		if !strings.HasPrefix(lines[name], "FAIL") {
			t.Errorf("%s: %q, want FAIL", name, lines[name])
		}
		for _, p := range parts {
			if !strings.Contains(lines[name], p) {
				t.Errorf("%s: %q lacks %q", name, lines[name], p)
			}
		}
	}

	// Docker down; no token at all; a range outside 1024-65535.
	o.docker = func(context.Context) (docker.DaemonInfo, error) {
		return docker.DaemonInfo{}, dtma.Errorf(dtma.EUNAVAILABLE, "ping docker: connection refused")
	}
	o.cfg.Tokens, o.client = nil, nil
	o.cfg.PortRangeStart, o.cfg.PortRangeEnd = 80, 90
	lines, _ = doctorLines(t, o)
	if !strings.Contains(lines["docker"], "fix: start Docker") || !strings.Contains(lines["token"], "fix: set DTMA_BEARER_TOKEN") ||
		!strings.Contains(lines["ports"], "not within 1024-65535") {
		t.Errorf("second round: %v", lines)
	}
}

// freePortBlock returns the first of five consecutive free ports.
func freePortBlock(t *testing.T) int {
	t.Helper()
	for start := 41000; start < 60000; start += 7 {
		ok := true
		for p := start; p < start+5 && ok; p++ {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return start
		}
	}
	t.Fatal("no five free ports")
	return 0
}

func TestHealthcheck(t *testing.T) {
	status := 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if _, _, err := runCLI(t, map[string]string{"DTMA_URL": srv.URL}, "healthcheck"); err != nil {
		t.Errorf("healthy agent: %v", err)
	}
	status = 503
	if _, _, err := runCLI(t, map[string]string{"DTMA_URL": srv.URL}, "healthcheck"); err == nil || exitCode(err) != 1 {
		t.Errorf("503: %v, want exit 1", err)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	status = 200
	if _, _, err := runCLI(t, map[string]string{"DTMA_LISTEN": ":" + port}, "healthcheck"); err != nil {
		t.Errorf("DTMA_LISTEN: %v", err)
	}
	url := srv.URL
	srv.Close()
	_, _, err := runCLI(t, map[string]string{"DTMA_URL": url}, "healthcheck")
	var ue interface{ Unwrap() error }
	if err == nil || errors.As(err, &ue) && exitCode(err) != 1 {
		t.Errorf("no agent: %v", err)
	}
}
