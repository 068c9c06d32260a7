package http

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

func TestV1DeployHealthDecoding(t *testing.T) {
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}}
	h := s.Handler()
	for body, field := range map[string]string{
		`{"name":"a","image":"x","health":{"type":"mcp","interval":-1}}`:     "health.interval",
		`{"name":"a","image":"x","health":{"type":"mcp","timeout":1e300}}`:   "health.timeout",
		`{"name":"a","image":"x","health":{"interval":5}}`:                   "health.type",
		`{"name":"a","image":"x","health":{"type":"tcp","bogus":1}}`:         "bogus", // the shared strict decoder names the unknown key only
		`{"name":"a","image":"x","health":{"type":"tcp","retries":"three"}}`: "health.retries",
	} {
		req := httptest.NewRequest("POST", "/v1/instances", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e struct{ Error struct{ Code, Field string } }
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != 400 || e.Error.Field != field {
			t.Errorf("%s: %d %s, want 400 on %s", body, rec.Code, rec.Body, field)
		}
	}
}

func TestInstanceHealthBlock(t *testing.T) {
	inst := &dtma.Instance{Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30001}}}
	h := toHealth(inst)
	if h == nil || !h.Default || h.Check.Type != "tcp" || h.State != "unknown" || h.Check.Interval != 10 {
		t.Fatalf("default check block: %+v", h)
	}
	inst.Spec.Health = dtma.HealthCheck{Type: dtma.CheckNone}
	if toHealth(inst) != nil {
		t.Fatal("type none shows a block")
	}
	inst.Spec.Health = dtma.HealthCheck{Type: dtma.CheckMCP, Interval: 5 * time.Second}
	inst.Health = dtma.HealthStatus{State: dtma.HealthUnhealthy, LastError: "mcp ping: EOF", LastLatency: 1500 * time.Microsecond, ConsecutiveFailures: 3}
	h = toHealth(inst)
	if h.Default || h.Check.Path != "/mcp" || h.Check.Transport != "streamable" || h.State != "unhealthy" || *h.LastError != "mcp ping: EOF" || *h.LastLatencyMS != 1.5 {
		t.Fatalf("mcp block: %+v", h)
	}
	if toLegacyTool(inst).Health == nil || *toLegacyTool(inst).Health != "unhealthy" {
		t.Fatal("legacy tool health")
	}
}
