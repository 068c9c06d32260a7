package http

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/promtest"
	dto "github.com/prometheus/client_model/go"
)

// parseMetrics is promtest.Parse.
func parseMetrics(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	return promtest.Parse(t, body)
}

// metricValue is promtest.Value.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	return promtest.Value(fams, name, labels)
}

// fakeService is a fixed InstanceService for routing tests of the HTTP
// layer only (features are proven end to end in e2e/).
type fakeService struct {
	dtma.InstanceService
	list []*dtma.Instance
}

func (f *fakeService) ListInstances(context.Context) ([]*dtma.Instance, error) { return f.list, nil }
func (f *fakeService) Health(context.Context) dtma.Health {
	return dtma.Health{Version: "t", HostID: "h1", DockerOK: true, RegistryOK: false, LastObservedAt: time.Unix(1700000000, 0)}
}
func (f *fakeService) FindInstance(_ context.Context, ref string) (*dtma.Instance, error) {
	return nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q", ref)
}
func (f *fakeService) InstanceLogs(context.Context, string, dtma.LogOptions) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

func TestMetrics(t *testing.T) {
	svc := &fakeService{list: []*dtma.Instance{
		{Name: "a", Status: dtma.StatusRunning, DesiredState: dtma.DesiredRunning, Observed: dtma.Observed{DockerStatus: dtma.DockerRunning}, Health: dtma.HealthStatus{State: dtma.HealthHealthy}},
		{Name: "b", Status: dtma.StatusStopped, DesiredState: dtma.DesiredRunning, Observed: dtma.Observed{DockerStatus: dtma.DockerExited}},
	}}
	s := &Server{Service: svc, Tokens: []string{"tok"}, Version: "1.2.3"}
	h := s.Handler()
	get := func(path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("/metrics", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated /metrics: %d", rec.Code)
	}
	get("/v1/instances/some%20name", "tok") // counted under its route, not its name
	rec := get("/metrics", "tok")
	body := rec.Body.String()
	fams := parseMetrics(t, body)
	for _, want := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"dtma_build_info", map[string]string{"version": "1.2.3", "host_id": "h1"}, 1},
		{"dtma_docker_up", nil, 1},
		{"dtma_registry_up", nil, 0},
		{"dtma_ready", nil, 0},
		{"dtma_instances", map[string]string{"dtma_status": "running", "docker_status": "running", "health": "healthy"}, 1},
		{"dtma_instances", map[string]string{"dtma_status": "stopped", "docker_status": "exited", "health": "none"}, 1},
		{"dtma_instances_by_status", map[string]string{"dtma_status": "crashloop"}, 0},
		{"dtma_instances_drift", nil, 1},
		{"dtma_http_requests_total", map[string]string{"method": "GET", "route": "/v1/instances/{ref}", "code": "404"}, 1},
		{"dtma_http_requests_total", map[string]string{"method": "GET", "route": "/metrics", "code": "401"}, 1},
		{"dtma_http_request_duration_seconds", map[string]string{"method": "GET", "route": "/v1/instances/{ref}"}, 1}, // sample count
	} {
		if got, ok := metricValue(fams, want.name, want.labels); !ok || got != want.value {
			t.Errorf("%s%v = %v (found %v), want %v", want.name, want.labels, got, ok, want.value)
		}
	}
	if strings.Contains(body, "some name") {
		t.Error("an instance name leaked into a metric label")
	}
}
