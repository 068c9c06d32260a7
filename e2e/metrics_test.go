package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/agentopia/dtma/internal/promtest"
	"github.com/moby/moby/client"
	dto "github.com/prometheus/client_model/go"
)

// rulesDir is deploy/prometheus in the source tree.
func rulesDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "deploy", "prometheus")
}

// scrape GETs /metrics and parses it with the client library's parser.
func scrape(t *testing.T, a *Agent) map[string]*dto.MetricFamily {
	t.Helper()
	return promtest.Parse(t, string(a.Expect(200, "GET", "/metrics", nil).Body))
}

// sample is promtest.Value.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	return promtest.Value(fams, name, labels)
}

// TestAlertRulesPromtool runs the rules' unit tests with promtool.
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not installed (Debian: apt-get install prometheus)")
		}
		t.Skip("promtool not installed")
	}
	dir := rulesDir(t)
	for _, args := range [][]string{{"check", "rules", "dtma-alerts.yml"}, {"test", "rules", "dtma-alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestMetricsAfterKnownCalls scrapes a real agent after a known sequence
// of calls: request counters and latency histograms by route, registry and
// Docker latencies, instances by status/docker status/health; and checks
// that every metric an alert rule uses is among what it emits.
func TestMetricsAfterKnownCalls(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	rcWaitRelists(t, a, 1)
	rcDeploy(t, a, rcDeployBody(img, "metrics one", "", nil, dtma.Port{ContainerPort: 8080}))
	a.Expect(404, "GET", "/v1/instances/nothing%20here", nil)
	a.Expect(404, "POST", "/tools/nothing-here/start", nil)
	a.Expect(200, "POST", "/v1/instances/metrics%20one/stop", nil)
	// A container removed behind the agent's back is recreated by the
	// reconciler.
	two := rcDeploy(t, a, rcDeployBody(img, "metrics two", "", nil))
	if _, err := a.Docker.ContainerRemove(context.Background(), two.ContainerID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "metrics two recreated", func() bool {
		got := rcMustGet(t, a, "metrics two")
		return got.ContainerID != two.ContainerID && got.DockerStatus == "running"
	})
	rcWaitRelists(t, a, 1)

	fams := scrape(t, a)
	for _, c := range []struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool
	}{
		{"dtma_http_requests_total", map[string]string{"method": "POST", "route": "/v1/instances", "code": "201"}, 2, false},
		{"dtma_http_requests_total", map[string]string{"method": "GET", "route": "/v1/instances/{ref}", "code": "404"}, 1, false},
		{"dtma_http_requests_total", map[string]string{"method": "POST", "route": "/tools/{ref}/start", "code": "404"}, 1, false},
		{"dtma_http_requests_total", map[string]string{"method": "POST", "route": "/v1/instances/{ref}/stop", "code": "200"}, 1, false},
		{"dtma_http_request_duration_seconds", map[string]string{"method": "POST", "route": "/v1/instances"}, 2, false},
		{"dtma_instances", map[string]string{"dtma_status": "stopped", "docker_status": "exited", "health": "none"}, 1, false},
		{"dtma_instances_by_status", map[string]string{"dtma_status": "running"}, 1, false},
		{"dtma_reconcile_recreated_total", nil, 1, false},
		{"dtma_reconcile_runs_total", nil, 2, true},
		{"dtma_reconcile_duration_seconds", nil, 2, true},
		{"dtma_reconcile_drift_instances", nil, 0, false},
		{"dtma_docker_event_stream_reconnects_total", nil, 0, false},
		{"dtma_instances_by_status", map[string]string{"dtma_status": "stopped"}, 1, false},
		{"dtma_docker_up", nil, 1, false},
		{"dtma_registry_up", nil, 1, false},
		{"dtma_ready", nil, 1, false},
		{"dtma_resync_interval_seconds", nil, 2, false},
		{"dtma_registry_operation_duration_seconds", map[string]string{"operation": "create", "backend": "sqlite"}, 1, true},
		{"dtma_docker_request_duration_seconds", map[string]string{"operation": "create"}, 3, false}, // two deploys, one recreate
		{"dtma_docker_request_duration_seconds", map[string]string{"operation": "stop"}, 1, false},
		{"dtma_docker_request_duration_seconds", map[string]string{"operation": "list"}, 2, true},
		{"dtma_heartbeat_sends_total", nil, 0, false},
	} {
		got, ok := sample(fams, c.name, c.labels)
		if !ok || (!c.atLeast && got != c.want) || (c.atLeast && got < c.want) {
			t.Errorf("%s%v = %v (present %v), want %v%s", c.name, c.labels, got, ok, c.want, map[bool]string{true: " or more"}[c.atLeast])
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s (Go runtime and process collectors)", name)
		}
	}

	// Every metric name an alert rule uses is emitted.
	rules, err := os.ReadFile(filepath.Join(rulesDir(t), "dtma-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	seen := map[string]bool{}
	// A name directly followed by =, =~, != or !~ (not ==) is a label
	// (dtma_status="crashloop"); any other is a metric.
	for _, m := range regexp.MustCompile(`\b(dtma_[a-z_]+)\b(==|=~|!=|!~|=)?`).FindAllStringSubmatch(string(rules), -1) {
		if (m[2] != "" && m[2] != "==") || seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		used = append(used, m[1])
	}
	sort.Strings(used)
	if len(used) < 8 {
		t.Fatalf("found only %v in the rules", used)
	}
	for _, name := range used {
		if fams[name] == nil {
			t.Errorf("alert rules use %s, which the agent does not emit", name)
		}
	}
	t.Logf("rule metrics, all emitted: %v", used)
}

// TestReadyFollowsReconcileAndDocker: /ready is 503 until the first full
// reconcile finishes (the agent's container list is held), 200 after,
// 503 while Docker is unreachable, 200 again when it returns.
func TestReadyFollowsReconcileAndDocker(t *testing.T) {
	t.Parallel()
	p := StartDockerProxy(t)
	isList := func(l string) bool { return strings.HasPrefix(l, "GET ") && strings.Contains(l, "/containers/json") }
	p.Hold(isList)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host()})
	ready := func() (int, string) {
		r := a.Do("GET", "/ready", nil)
		m := r.JSON(t)
		reason, _ := m["reason"].(string)
		return r.Status, reason
	}
	Eventually(t, 30*time.Second, "the agent's first container list held", func() bool { return p.Requests(isList) > 0 })
	if code, reason := ready(); code != 503 || reason != "the first full reconcile has not finished" {
		t.Fatalf("/ready before the first reconcile: %d %q", code, reason)
	}
	if r := a.DoAuth("GET", "/ready", nil, ""); r.Status != 503 {
		t.Fatalf("/ready without a token: %d (it is public)", r.Status)
	}
	// The held list is never answered; cutting the connections makes it
	// fail, and the reconciler retries on a proxy that forwards again.
	p.Hold(nil)
	p.Sever()
	p.Restore()
	Eventually(t, 90*time.Second, "/ready 200 after the first reconcile", func() bool { c, _ := ready(); return c == 200 })
	if r := a.DoAuth("GET", "/ready", nil, ""); r.Status != 200 {
		t.Fatalf("/ready without a token: %d (it is public)", r.Status)
	}
	p.Sever()
	if code, reason := ready(); code != 503 || !strings.HasPrefix(reason, "docker unavailable") {
		t.Fatalf("/ready with Docker down: %d %q", code, reason)
	}
	if fams := scrape(t, a); fams["dtma_ready"].Metric[0].Gauge.GetValue() != 0 {
		t.Error("dtma_ready is not 0 with Docker down")
	}
	p.Restore()
	Eventually(t, 60*time.Second, "/ready 200 after Docker returns", func() bool { c, _ := ready(); return c == 200 })
}

// TestReadyRegistryOutage: /ready is 503 naming the registry while
// PostgreSQL is stopped (registry metrics count the failures), 200 once
// it is back.
func TestReadyRegistryOutage(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t) // its own server: this test stops it
	dsn := srv.CreateDatabase(t, t.Name())
	a := StartAgent(t, AgentOptions{RegistryURL: dsn, Env: []string{
		"DTMA_REGISTRY_CONNECT_TIMEOUT=2s", "DTMA_REGISTRY_STATEMENT_TIMEOUT=2s",
	}})
	ready := func() (int, string) {
		r := a.DoAuth("GET", "/ready", nil, "")
		m := r.JSON(t)
		reason, _ := m["reason"].(string)
		return r.Status, reason
	}
	Eventually(t, 60*time.Second, "/ready 200", func() bool { c, _ := ready(); return c == 200 })
	srv.Stop(t)
	if code, reason := ready(); code != 503 || !strings.HasPrefix(reason, "registry unavailable") {
		t.Fatalf("/ready with PostgreSQL stopped: %d %q", code, reason)
	}
	fams := scrape(t, a)
	if v, ok := sample(fams, "dtma_registry_operation_errors_total", map[string]string{"operation": "ping", "backend": "postgres", "code": "unavailable"}); !ok || v < 1 {
		t.Errorf("registry ping errors during the outage: %v (present %v)", v, ok)
	}
	if v, _ := sample(fams, "dtma_registry_up", nil); v != 0 {
		t.Errorf("dtma_registry_up = %v during the outage", v)
	}
	srv.Restart(t)
	Eventually(t, 60*time.Second, "/ready 200 after PostgreSQL returns", func() bool { c, _ := ready(); return c == 200 })
}
