package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
)

// MCPImage is the MCP fixture image (internal/testimage/mcp).
func MCPImage(t testing.TB) string { return dockertest.MCPImage(t) }

// mcpControl tells the fixture behind host port port to hang, error, die
// or serve (ok).
func mcpControl(t *testing.T, port int, mode string) {
	t.Helper()
	resp, err := http.Post("http://127.0.0.1:"+strconv.Itoa(port)+"/control?mode="+mode, "", nil)
	if mode == "die" {
		if err == nil {
			resp.Body.Close()
		}
		return
	}
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("control %s: %v %v", mode, err, resp)
	}
	resp.Body.Close()
}

// healthOf returns the v1 health block of ref (nil when none).
func healthOf(t *testing.T, a *Agent, ref string) *dtmahttp.InstanceHealth {
	t.Helper()
	inst, _ := rcGet(t, a, ref)
	return inst.Health
}

func waitHealth(t *testing.T, a *Agent, ref, want string, within time.Duration) *dtmahttp.InstanceHealth {
	t.Helper()
	var h *dtmahttp.InstanceHealth
	Eventually(t, within, ref+" "+want, func() bool {
		h = healthOf(t, a, ref)
		return h != nil && h.State == want
	})
	return h
}

// TestHealthMCPTransitions: a v1 deploy with an mcp check turns healthy;
// the tool hanging makes it unhealthy within interval × retries (+ timeout),
// visible in v1, /tools/{ref}/status, /status (error) and /metrics; it
// turns healthy again when the tool recovers; an error-answering tool is
// unhealthy too.
func TestHealthMCPTransitions(t *testing.T) {
	t.Parallel()
	img := MCPImage(t)
	a := StartAgent(t, AgentOptions{})
	body := map[string]any{"name": "mcp tool", "image": img, "ports": []dtma.Port{{ContainerPort: 8080}},
		"health": map[string]any{"type": "mcp", "interval": 1, "timeout": 0.5, "retries": 2}}
	r := a.Expect(201, "POST", "/v1/instances", body)
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	port := inst.Ports[0].HostPort
	if inst.Health == nil || inst.Health.Check.Type != "mcp" || inst.Health.Check.Path != "/mcp" || inst.Health.Default {
		t.Fatalf("deploy answer's health block: %+v", inst.Health)
	}
	h := waitHealth(t, a, "mcp tool", "healthy", 30*time.Second)
	if h.Detail == nil || *h.Detail != "tools=1" || h.LastLatencyMS == nil {
		t.Errorf("healthy block: %+v", h)
	}
	// Idempotent re-deploy of the same body (the check is part of the spec).
	a.Expect(200, "POST", "/v1/instances", body)
	other := map[string]any{"name": "mcp tool", "image": img, "ports": []dtma.Port{{ContainerPort: 8080}}, "health": map[string]any{"type": "tcp"}}
	if r := a.Do("POST", "/v1/instances", other); r.Status != 409 || !strings.Contains(string(r.Body), "health") {
		t.Errorf("re-deploy with another check: %d %s", r.Status, r.Body)
	}

	mcpControl(t, port, "hang")
	start := time.Now()
	h = waitHealth(t, a, "mcp tool", "unhealthy", 30*time.Second)
	t.Logf("hang -> unhealthy after %v (interval 1 s × retries 2, timeout 0.5 s)", time.Since(start).Round(100*time.Millisecond))
	if h.LastError == nil || !strings.Contains(*h.LastError, "no answer within 500ms") || h.ConsecutiveFailures < 2 {
		t.Errorf("unhealthy block: %+v", h)
	}
	// Legacy surfaces: not plain running.
	ls := a.Expect(200, "GET", "/tools/mcp%20tool/status", nil).JSON(t)
	data, _ := ls["data"].(map[string]any)
	if ls["status"] != "error" || data["health"] != "unhealthy" || data["state"] != "running" {
		t.Errorf("/tools/{ref}/status of an unhealthy tool: %v", ls)
	}
	st := a.Expect(200, "GET", "/status", nil).JSON(t)
	tools, _ := st["tool_instances"].([]any)
	if len(tools) != 1 || tools[0].(map[string]any)["status"] != "error" || tools[0].(map[string]any)["health"] != "unhealthy" {
		t.Errorf("/status of an unhealthy tool: %v", tools)
	}
	fams := scrape(t, a)
	if v, ok := sample(fams, "dtma_instances", map[string]string{"dtma_status": "running", "docker_status": "running", "health": "unhealthy"}); !ok || v != 1 {
		t.Errorf("dtma_instances{health=unhealthy} = %v %v", v, ok)
	}
	if v, ok := sample(fams, "dtma_health_probes_total", map[string]string{"type": "mcp", "result": "timeout"}); !ok || v < 2 {
		t.Errorf("mcp timeouts counted %v %v", v, ok)
	}

	mcpControl(t, port, "ok")
	start = time.Now()
	waitHealth(t, a, "mcp tool", "healthy", 30*time.Second)
	t.Logf("recovered -> healthy after %v", time.Since(start).Round(100*time.Millisecond))
	mcpControl(t, port, "error")
	h = waitHealth(t, a, "mcp tool", "unhealthy", 30*time.Second)
	if h.LastError == nil || !strings.Contains(*h.LastError, "mcp initialize") {
		t.Errorf("error mode: %+v", h)
	}
	mcpControl(t, port, "ok")
	waitHealth(t, a, "mcp tool", "healthy", 30*time.Second)
}

// TestHealthOnUnhealthyRestart: with on_unhealthy: restart a tool that
// errors is restarted (a new StartedAt; the fixture starts in ok mode)
// and is healthy again.
func TestHealthOnUnhealthyRestart(t *testing.T) {
	t.Parallel()
	img := MCPImage(t)
	a := StartAgent(t, AgentOptions{})
	r := a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "restart me", "image": img, "ports": []dtma.Port{{ContainerPort: 8080}},
		"health": map[string]any{"type": "mcp", "interval": 1, "timeout": 0.5, "retries": 2, "on_unhealthy": "restart"}})
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	waitHealth(t, a, "restart me", "healthy", 30*time.Second)
	before := rcMustGet(t, a, "restart me").StartedAt
	mcpControl(t, inst.Ports[0].HostPort, "error")
	Eventually(t, 60*time.Second, "the unhealthy tool restarted", func() bool {
		got := rcMustGet(t, a, "restart me")
		return got.StartedAt != nil && before != nil && got.StartedAt.After(*before)
	})
	waitHealth(t, a, "restart me", "healthy", 30*time.Second)
	if v, ok := sample(scrape(t, a), "dtma_health_restarts_total", nil); !ok || v < 1 {
		t.Errorf("dtma_health_restarts_total = %v %v", v, ok)
	}
	if !strings.Contains(a.Logs(), "restarting unhealthy instance") {
		t.Error("no log line for the policy restart")
	}
}

// TestHealthLegacyDefaultAndNoProbeAfterRemove: a legacy deploy with a
// published port gets the default tcp check (healthy on the echo tool);
// a stopped tool is not probed (health unknown); after removal no probe
// runs.
func TestHealthLegacyDefaultAndNoProbeAfterRemove(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	port := freePort(t)
	a.Expect(201, "POST", "/tools", legacyBody(img, "legacy echo", "", nil,
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(port)}}}))
	h := waitHealth(t, a, "legacy echo", "healthy", 30*time.Second)
	if !h.Default || h.Check.Type != "tcp" {
		t.Errorf("legacy default check: %+v", h)
	}
	probes := func() float64 {
		v, _ := sample(scrape(t, a), "dtma_health_probes_total", map[string]string{"type": "tcp", "result": "success"})
		return v
	}
	a.Expect(200, "POST", "/tools/legacy%20echo/stop", nil)
	Eventually(t, 30*time.Second, "a stopped tool has no verdict", func() bool {
		h := healthOf(t, a, "legacy echo")
		return h != nil && h.State == "unknown"
	})
	n := probes()
	rcWaitRelists(t, a, 2) // the reconciler's clock: a few probe intervals pass
	if probes() != n {
		t.Errorf("a stopped tool was probed")
	}
	a.Expect(200, "POST", "/tools/legacy%20echo/start", nil)
	waitHealth(t, a, "legacy echo", "healthy", 30*time.Second)
	a.Expect(200, "DELETE", "/tools/legacy%20echo", nil)
	n = probes()
	rcWaitRelists(t, a, 3)
	if got := probes(); got != n {
		t.Errorf("probes after removal: %v -> %v", n, got)
	}
}

// TestHealthHeartbeatWord: the heartbeat reports a running tool whose
// check fails as error_runtime, and running again once it recovers.
func TestHealthHeartbeatWord(t *testing.T) {
	t.Parallel()
	img := MCPImage(t)
	var mu sync.Mutex
	var words []string
	const acct = "5f0c2a71-3b1d-4e2a-9c4d-7e8f9a0b1c2d"
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hb struct {
			Tools []map[string]any `json:"tool_statuses"`
		}
		_ = json.NewDecoder(r.Body).Decode(&hb)
		for _, ts := range hb.Tools {
			if ts["account_tool_instance_id"] == acct {
				mu.Lock()
				words = append(words, fmt.Sprint(ts["status_on_toolbox"]))
				mu.Unlock()
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer backend.Close()
	a := StartAgent(t, AgentOptions{Env: []string{"AGENTOPIA_API_BASE_URL=" + backend.URL, "DTMA_HEARTBEAT_INTERVAL=1s"}})
	r := a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "hb mcp", "account_tool_instance_id": acct, "image": img,
		"ports": []dtma.Port{{ContainerPort: 8080}}, "health": map[string]any{"type": "mcp", "interval": 1, "timeout": 0.5, "retries": 2}})
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	waitHealth(t, a, "hb mcp", "healthy", 30*time.Second)
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(words) == 0 {
			return ""
		}
		return words[len(words)-1]
	}
	Eventually(t, 30*time.Second, "a heartbeat saying running", func() bool { return last() == "running" })
	mcpControl(t, inst.Ports[0].HostPort, "hang")
	Eventually(t, 30*time.Second, "a heartbeat saying error_runtime", func() bool { return last() == "error_runtime" })
	mcpControl(t, inst.Ports[0].HostPort, "ok")
	Eventually(t, 30*time.Second, "a heartbeat saying running again", func() bool { return last() == "running" })
}

// TestHealthSurvivesAgentRestart: the verdict recorded for a container run
// is where probing resumes after an agent restart — the state and its time
// of change stay as they were (no starting/healthy churn written for every
// instance), and probing goes on.
func TestHealthSurvivesAgentRestart(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	rcDeploy(t, a, rcDeployBody(img, "steady", "", nil, dtma.Port{ContainerPort: 8080}))
	before := waitHealth(t, a, "steady", "healthy", 30*time.Second)
	a.Restart()
	var after *dtmahttp.InstanceHealth
	Eventually(t, 30*time.Second, "a probe after the restart", func() bool {
		after = healthOf(t, a, "steady")
		return after != nil && after.CheckedAt != nil
	})
	if after.State != "healthy" || after.ChangedAt == nil || !after.ChangedAt.Equal(*before.ChangedAt) {
		t.Errorf("health after an agent restart: %+v (changed_at %v), before %+v (changed_at %v)", after, after.ChangedAt, before, before.ChangedAt)
	}
}
