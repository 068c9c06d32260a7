package http

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

type healthService struct {
	dtma.InstanceService
	h dtma.Health
}

func (f *healthService) Health(context.Context) dtma.Health { return f.h }

func TestReady(t *testing.T) {
	seen := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		h      dtma.Health
		code   int
		reason string
	}{
		{dtma.Health{DockerOK: true, RegistryOK: true, LastObservedAt: seen}, 200, ""},
		{dtma.Health{DockerOK: true, RegistryOK: true}, 503, "the first full reconcile has not finished"},
		{dtma.Health{DockerOK: false, DockerError: "cannot connect", RegistryOK: true, LastObservedAt: seen}, 503, "docker unavailable: cannot connect"},
		{dtma.Health{DockerOK: true, RegistryOK: false, RegistryError: "database is down", LastObservedAt: seen}, 503, "registry unavailable: database is down"},
	} {
		s := &Server{Service: &healthService{h: tc.h}, Tokens: []string{"tok"}}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil)) // no token: public
		var body Ready
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
		if rec.Code != tc.code || body.Reason != tc.reason || body.Ready != (tc.code == http.StatusOK) {
			t.Errorf("%+v: %d %+v, want %d %q", tc.h, rec.Code, body, tc.code, tc.reason)
		}
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Errorf("content type %q", rec.Header().Get("Content-Type"))
		}
	}
}
