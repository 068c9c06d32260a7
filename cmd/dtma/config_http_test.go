package main

import (
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
