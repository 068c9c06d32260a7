package health_test

import (
	"context"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/health"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// TestMain sweeps what this run left on the daemon (dockertest.Main).
func TestMain(m *testing.M) { os.Exit(dockertest.Main(m)) }

// runMCP starts the MCP fixture with its 8080 published on a free
// loopback port and returns that port; the container is removed (by its
// run label) when the test ends.
func runMCP(t *testing.T, env ...string) int {
	t.Helper()
	c := dockertest.Client(t)
	image := dockertest.MCPImage(t)
	label := dockertest.TestLabel + "=" + dockertest.RunID()
	t.Cleanup(func() { dockertest.Cleanup(t, c, label) })
	port := dockertest.FreePort(t)
	p := network.MustParsePort("8080/tcp")
	ctx := context.Background()
	res, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:   "dtma-health-mcp-" + dockertest.RunID() + "-" + strconv.Itoa(port),
		Config: &container.Config{Image: image, Env: env, Labels: dockertest.Labels(), ExposedPorts: network.PortSet{p: {}}},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}}},
		},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := c.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	return port
}

func control(t *testing.T, port int, mode string) {
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

// TestProberAgainstMCPFixture runs the prober on the real fixture image:
// healthy over Streamable HTTP and SSE, unhealthy when it hangs or errors,
// healthy again when it recovers, unhealthy when it dies.
func TestProberAgainstMCPFixture(t *testing.T) {
	port := runMCP(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	changes := make(chan dtma.HealthStatus, 100)
	p := health.New(health.Config{Concurrency: 4, OnChange: func(id string, st dtma.HealthStatus) {
		if id == "streamable" {
			changes <- st
		}
	}})
	defer p.Close()
	check := dtma.HealthCheck{Type: dtma.CheckMCP, Interval: time.Second, Timeout: 500 * time.Millisecond, Retries: 2}
	p.Set(health.Target{ID: "streamable", Check: check, Addr: addr, StartedAt: time.Now()})
	sse := check
	sse.Transport = dtma.CheckMCPSSE
	p.Set(health.Target{ID: "sse", Check: sse, Addr: addr, StartedAt: time.Now()})

	wait := func(want dtma.HealthState) dtma.HealthStatus {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case st := <-changes:
				if st.State == want {
					return st
				}
			case <-deadline:
				t.Fatalf("never %s", want)
			}
		}
	}
	st := wait(dtma.HealthHealthy)
	if st.Detail != "tools=1" {
		t.Errorf("detail %q, want tools=1", st.Detail)
	}
	if st, _ := p.Status("sse"); st.State != dtma.HealthHealthy && st.State != dtma.HealthStarting {
		t.Errorf("sse check: %+v", st)
	}
	control(t, port, "hang")
	st = wait(dtma.HealthUnhealthy)
	if !strings.Contains(st.LastError, "no answer within 500ms") {
		t.Errorf("hang: last error %q", st.LastError)
	}
	control(t, port, "ok")
	wait(dtma.HealthHealthy)
	control(t, port, "error")
	st = wait(dtma.HealthUnhealthy)
	if !strings.Contains(st.LastError, "mcp initialize") {
		t.Errorf("error: last error %q", st.LastError)
	}
	control(t, port, "ok")
	wait(dtma.HealthHealthy)
	// The sse target probes on its own schedule: wait (capped) for its
	// verdict rather than read it the moment the other one recovered.
	var sseSt dtma.HealthStatus
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if sseSt, _ = p.Status("sse"); sseSt.State == dtma.HealthHealthy {
			break
		}
	}
	if sseSt.State != dtma.HealthHealthy {
		t.Errorf("sse check after recovery: %+v", sseSt)
	}
	control(t, port, "die")
	st = wait(dtma.HealthUnhealthy)
	if st.ConsecutiveFailures < 2 {
		t.Errorf("died: %+v", st)
	}
}
