package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigHTTPHardening: defaults, environment, and TLS files both or
// neither (the error names the missing variable).
func TestConfigHTTPHardening(t *testing.T) {
	c := mustServeConfig(t, nil)
	if c.TLSCertFile != "" || c.HTTPReadTimeout != 30*time.Second || c.MaxConnections != 1024 || c.AuthFailureLimit != 10 {
		t.Errorf("defaults: %+v", c)
	}
	c = mustServeConfig(t, map[string]string{
		"DTMA_TLS_CERT_FILE": "/c.pem", "DTMA_TLS_KEY_FILE": "/k.pem", "DTMA_HTTP_READ_TIMEOUT": "2s",
		"DTMA_MAX_CONNECTIONS": "7", "DTMA_AUTH_FAILURE_LIMIT": "0",
	})
	if c.TLSCertFile != "/c.pem" || c.TLSKeyFile != "/k.pem" || c.HTTPReadTimeout != 2*time.Second || c.MaxConnections != 7 || c.AuthFailureLimit != 0 {
		t.Errorf("from the environment: %+v", c)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"DTMA_TLS_CERT_FILE": "/c.pem"}, nil, "DTMA_TLS_KEY_FILE"},
		{nil, []string{"--tls-key-file", "/k.pem"}, "DTMA_TLS_CERT_FILE"},
		{map[string]string{"DTMA_HTTP_READ_TIMEOUT": "soon"}, nil, "--http-read-timeout"},
		{map[string]string{"DTMA_MAX_CONNECTIONS": "0"}, nil, "--max-connections"},
		{map[string]string{"DTMA_AUTH_FAILURE_LIMIT": "-1"}, nil, "--auth-failure-limit"},
	} {
		_, err := serveConfig(t, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want one naming %s", tc.env, tc.args, err, tc.want)
		}
	}
}

// TestClientTrustsCAFile: `dtma ls` reaches an agent serving HTTPS with a
// certificate no system root signed when DTMA_CA_FILE names it, and fails
// verification without it.
func TestClientTrustsCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, map[string]any{"instances": []any{}})
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "agent.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DTMA_URL": srv.URL, "DTMA_TOKEN": fakeToken}
	if _, _, err := runCLI(t, env, "ls"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without DTMA_CA_FILE: %v, want a certificate error", err)
	}
	env["DTMA_CA_FILE"] = ca
	if _, stderr, err := runCLI(t, env, "ls"); err != nil {
		t.Errorf("with DTMA_CA_FILE: %v %s", err, stderr)
	}
	env["DTMA_CA_FILE"] = filepath.Join(t.TempDir(), "none.pem")
	if _, _, err := runCLI(t, env, "ls"); err == nil || !strings.Contains(err.Error(), "DTMA_CA_FILE") {
		t.Errorf("missing DTMA_CA_FILE: %v", err)
	}
}
