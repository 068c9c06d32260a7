package metrics_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/metrics"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// value returns the value of a series (a histogram's sample count) by its
// exact labels, from what the registry gathers.
func value(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.Metric {
			got := map[string]string{}
			for _, l := range s.Label {
				got[l.GetName()] = l.GetValue()
			}
			if !maps.Equal(got, labels) && !(len(got) == 0 && len(labels) == 0) {
				continue
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue(), true
			case s.Gauge != nil:
				return s.Gauge.GetValue(), true
			case s.Histogram != nil:
				return float64(s.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func expect(t *testing.T, m *metrics.Metrics, name string, labels map[string]string, want float64) {
	t.Helper()
	if got, ok := value(t, m, name, labels); !ok || got != want {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
	}
}

func TestRegistryDecorator(t *testing.T) {
	m := metrics.New()
	mem := registrytest.NewMemory("h1")
	reg := m.WrapRegistry(mem, "postgres")
	ctx := context.Background()
	inst := &dtma.Instance{Name: "a", ContainerName: "a", Spec: dtma.Spec{Image: "x"}, DesiredState: dtma.DesiredRunning, Status: dtma.StatusRunning, Tracking: dtma.TrackLabel}
	if err := reg.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.FindInstanceByID(ctx, "00000000-0000-0000-0000-000000000000"); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Fatalf("find: %v", err)
	}
	mem.SetFail(func(string) error { return dtma.Errorf(dtma.EUNAVAILABLE, "down") })
	if err := reg.Ping(ctx); err == nil {
		t.Fatal("ping of a failing registry passes")
	}
	expect(t, m, "dtma_registry_operation_duration_seconds", map[string]string{"operation": "create", "backend": "postgres"}, 1)
	expect(t, m, "dtma_registry_operation_duration_seconds", map[string]string{"operation": "ping", "backend": "postgres"}, 1)
	expect(t, m, "dtma_registry_operation_errors_total", map[string]string{"operation": "ping", "backend": "postgres", "code": "unavailable"}, 1)
	expect(t, m, "dtma_registry_operation_errors_total", map[string]string{"operation": "find_by_id", "backend": "postgres", "code": "not_found"}, 1)
	if _, ok := value(t, m, "dtma_registry_operation_errors_total", map[string]string{"operation": "create", "backend": "postgres", "code": "unavailable"}); ok {
		t.Error("a successful create counted as an error")
	}
}

func TestRuntimeDecorator(t *testing.T) {
	m := metrics.New()
	fake := runtimetest.New("h1")
	rt := m.WrapRuntime(fake)
	ctx := context.Background()
	if _, err := rt.InspectContainer(ctx, "missing"); err == nil {
		t.Fatal("inspect of a missing container passes")
	}
	fake.FailNext("Ping", dtma.Errorf(dtma.EUNAVAILABLE, "docker down"))
	if err := rt.Ping(ctx); err == nil {
		t.Fatal("injected ping failure lost")
	}
	if err := rt.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, m, "dtma_docker_request_duration_seconds", map[string]string{"operation": "ping"}, 2)
	expect(t, m, "dtma_docker_request_errors_total", map[string]string{"operation": "ping", "code": "unavailable"}, 1)
	expect(t, m, "dtma_docker_request_errors_total", map[string]string{"operation": "inspect", "code": "not_found"}, 1)
	expect(t, m, "dtma_docker_request_duration_seconds", map[string]string{"operation": "create"}, 0) // pre-created
}

func TestProbeAndHeartbeat(t *testing.T) {
	m := metrics.New()
	m.Probe("mcp", "success", 20*time.Millisecond)
	m.Probe("mcp", "timeout", time.Second)
	m.Heartbeat(nil)
	m.Heartbeat(context.DeadlineExceeded)
	expect(t, m, "dtma_health_probes_total", map[string]string{"type": "mcp", "result": "timeout"}, 1)
	expect(t, m, "dtma_health_probe_duration_seconds", map[string]string{"type": "mcp"}, 2)
	expect(t, m, "dtma_heartbeat_sends_total", nil, 2)
	expect(t, m, "dtma_heartbeat_failures_total", nil, 1)
	expect(t, m, "dtma_reconcile_runs_total", nil, 0)
	if _, ok := value(t, m, "go_goroutines", nil); !ok {
		t.Error("no Go runtime collector")
	}
	if _, ok := value(t, m, "process_resident_memory_bytes", nil); !ok {
		t.Error("no process collector")
	}
}
