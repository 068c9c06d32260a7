package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
)

const stdioToken = "stdio-bridge-token-0123456789"

type bearerRT struct{ token string }

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcpConnect opens a Streamable HTTP session of the official SDK's client.
func mcpConnect(url, token string, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearerRT{token}}, MaxRetries: -1}, nil)
}

// mcpEcho calls echo and returns its text.
func mcpEcho(cs *mcp.ClientSession, text string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		return "", err
	}
	if res.IsError || len(res.Content) == 0 {
		return "", fmt.Errorf("error result %+v", res)
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

// echoWorks reports whether a new session can call echo right now.
func echoWorks(url string) bool {
	cs, err := mcpConnect(url, stdioToken, nil)
	if err != nil {
		return false
	}
	defer cs.Close()
	got, err := mcpEcho(cs, "ping")
	return err == nil && got == "ping"
}

// TestStdioBridge: a stdio MCP server deployed through v1 is served by the
// agent as MCP Streamable HTTP on its bridge port: initialize, tools/list,
// tools/call with the SDK's client; 20 concurrent sessions with no crossed
// answers and progress to the right session; the token is required; a
// garbage-printing and an exiting server are survived; an agent SIGKILL and
// restart (container not restarted) and a container restart leave new
// sessions working; a remove closes the port.
func TestStdioBridge(t *testing.T) {
	image := dockertest.MCPStdioImage(t)
	a := StartAgent(t, AgentOptions{})
	var inst dtmahttp.Instance
	a.Expect(201, "POST", "/v1/instances", map[string]any{
		"name": "stdio-tool", "image": image,
		"mcp": map[string]any{"transport": "stdio", "token": stdioToken},
	}).Decode(t, &inst)
	if inst.MCP == nil || inst.MCP.Transport != "stdio" || !inst.MCP.TokenSet || inst.MCP.BridgePort == 0 || inst.MCP.Path != "/mcp" {
		t.Fatalf("v1 mcp = %+v", inst.MCP)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(inst.MCP.BridgePort) + "/mcp"
	Eventually(t, 60*time.Second, "the bridge to serve", func() bool { return echoWorks(url) })

	t.Run("Basics", func(t *testing.T) {
		cs, err := mcpConnect(url, stdioToken, nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer cs.Close()
		if name := cs.InitializeResult().ServerInfo.Name; name != "mcpstdio" {
			t.Errorf("server name %q", name)
		}
		tools, err := cs.ListTools(context.Background(), nil)
		if err != nil || len(tools.Tools) < 7 {
			t.Fatalf("tools/list: %v, %v", tools, err)
		}
		if got, err := mcpEcho(cs, "through the agent"); err != nil || got != "through the agent" {
			t.Errorf("echo: %q, %v", got, err)
		}
		// The legacy status shows the bridge's port like a published port.
		body := string(a.Expect(200, "GET", "/tools/stdio-tool/status", nil).Body)
		if !strings.Contains(body, `"public_port":`+strconv.Itoa(inst.MCP.BridgePort)) {
			t.Errorf("legacy status does not show the bridge port %d: %s", inst.MCP.BridgePort, body)
		}
		// Parsed with the client library's parser (label order is the library's).
		fams := scrape(t, a)
		if v, ok := sample(fams, "dtma_mcp_bridge_up", map[string]string{"instance_id": inst.ID, "instance": "stdio-tool"}); !ok || v != 1 {
			t.Errorf("dtma_mcp_bridge_up = %v (present %v), want 1", v, ok)
		}
		for _, name := range []string{"dtma_mcp_bridge_sessions", "dtma_mcp_bridge_messages_total"} {
			if fams[name] == nil {
				t.Errorf("metrics lack %s", name)
			}
		}
		if _, err := mcpConnect(url, "", nil); err == nil {
			t.Errorf("a session without the instance's token was opened")
		}
		if _, err := mcpConnect(url, Token, nil); err == nil {
			t.Errorf("the agent's API token opened a session (the bridge's token is the instance's own)")
		}
	})

	t.Run("ConcurrentSessions", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mu sync.Mutex
				var progress []string
				cs, err := mcpConnect(url, stdioToken, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					mu.Lock()
					progress = append(progress, fmt.Sprint(r.Params.ProgressToken))
					mu.Unlock()
				}})
				if err != nil {
					errs <- fmt.Errorf("session %d: %v", i, err)
					return
				}
				defer cs.Close()
				for j := range 3 {
					want := fmt.Sprintf("s%d-c%d", i, j)
					if got, err := mcpEcho(cs, want); err != nil || got != want {
						errs <- fmt.Errorf("session %d: echo %q answered %q, %v", i, want, got, err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				p := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"steps": 2}}
				p.SetProgressToken("tok")
				if _, err := cs.CallTool(ctx, p); err != nil {
					errs <- fmt.Errorf("session %d: progress: %v", i, err)
					return
				}
				// The client hands notifications to its handler on its own
				// goroutine: they may be counted just after the answer.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					mu.Lock()
					n := len(progress)
					mu.Unlock()
					if n >= 2 {
						break
					}
				}
				_ = cs.Ping(ctx, nil)
				mu.Lock()
				defer mu.Unlock()
				if len(progress) != 2 || progress[0] != "tok" || progress[1] != "tok" {
					errs <- fmt.Errorf("session %d: progress notifications %v, want [tok tok]", i, progress)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("GarbageAndExit", func(t *testing.T) {
		cs, err := mcpConnect(url, stdioToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "garbage", Arguments: map[string]any{"text": "junk"}}); err != nil {
			t.Fatalf("garbage: %v", err)
		}
		if got, err := mcpEcho(cs, "after junk"); err != nil || got != "after junk" {
			t.Errorf("echo after garbage: %q, %v", got, err)
		}
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "exit", Arguments: map[string]any{"code": 2}})
		cs.Close()
		// Docker restarts it (unless-stopped); the bridge attaches again.
		Eventually(t, 60*time.Second, "a new session after the server exited", func() bool { return echoWorks(url) })
		a.Expect(200, "GET", "/health", nil)
	})

	t.Run("AgentKilled", func(t *testing.T) {
		before := a.Inspect(inst.ContainerID).Container.State.StartedAt
		old, err := mcpConnect(url, stdioToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		a.Restart() // SIGKILL, then start again
		if !echoWorks(url) {
			// "At once": the agent serves its bridges from its stored rows
			// before the first relist; allow only the bridge's own start.
			Eventually(t, 10*time.Second, "a new session right after the agent restarted", func() bool { return echoWorks(url) })
		}
		if after := a.Inspect(inst.ContainerID).Container.State.StartedAt; after != before {
			t.Errorf("the container was restarted by the agent's restart: StartedAt %s -> %s", before, after)
		}
		if _, err := mcpEcho(old, "old session"); err == nil {
			t.Errorf("a session of the killed agent still answers")
		}
	})

	t.Run("ContainerRestart", func(t *testing.T) {
		a.Expect(200, "POST", "/v1/instances/stdio-tool/restart", nil)
		Eventually(t, 60*time.Second, "a new session after the container restart", func() bool { return echoWorks(url) })
	})

	t.Run("Remove", func(t *testing.T) {
		a.Expect(204, "DELETE", "/v1/instances/stdio-tool", nil)
		Eventually(t, 30*time.Second, "the bridge port to close", func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(inst.MCP.BridgePort), time.Second)
			if err != nil {
				return true
			}
			c.Close()
			return false
		})
	})
}

// TestStdioLegacyDefault: with DTMA_STDIO_IMAGES matching the image, a
// legacy POST /tools deploys a stdio instance whose bridge serves MCP on
// the port the legacy status lists.
func TestStdioLegacyDefault(t *testing.T) {
	image := dockertest.MCPStdioImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_STDIO_IMAGES=" + dockertest.MCPStdioImageRepo + ":*"}})
	a.Expect(201, "POST", "/tools", map[string]any{
		"dockerImageUrl": image, "instanceNameOnToolbox": "legacy stdio",
		"accountToolInstanceId": "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10",
	})
	var inst dtmahttp.Instance
	a.Expect(200, "GET", "/v1/instances/legacy%20stdio", nil).Decode(t, &inst)
	if inst.MCP == nil || inst.MCP.Transport != "stdio" || inst.MCP.BridgePort == 0 || inst.MCP.TokenSet {
		t.Fatalf("mcp of a legacy deploy of a DTMA_STDIO_IMAGES image: %+v", inst.MCP)
	}
	body := string(a.Expect(200, "GET", "/tools/legacy%20stdio/status", nil).Body)
	if !strings.Contains(body, `"public_port":`+strconv.Itoa(inst.MCP.BridgePort)) {
		t.Errorf("legacy status lacks the bridge port %d: %s", inst.MCP.BridgePort, body)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(inst.MCP.BridgePort) + "/mcp"
	Eventually(t, 60*time.Second, "the bridge of a legacy deploy to serve", func() bool {
		cs, err := mcpConnect(url, "", nil)
		if err != nil {
			return false
		}
		defer cs.Close()
		got, err := mcpEcho(cs, "legacy")
		return err == nil && got == "legacy"
	})
	// Its default health check is an mcp check through the bridge: the
	// bridge's session with the server in the container is what health says.
	Eventually(t, 60*time.Second, "the stdio instance healthy through its bridge", func() bool {
		a.Expect(200, "GET", "/v1/instances/legacy%20stdio", nil).Decode(t, &inst)
		return inst.Health != nil && inst.Health.State == "healthy"
	})
	if h := inst.Health; h.Check.Type != "mcp" || !h.Default || h.Detail == nil || !strings.HasPrefix(*h.Detail, "tools=") {
		t.Errorf("health of a stdio instance: %+v (check %+v), want the default mcp check through the bridge with a tools count", h, h.Check)
	}
}

// TestBenchStdioRSS is a benchmark, not a test (BENCHMARKS.md): the real
// agent's RSS before and after 50 stdio instances are deployed, their
// bridges attached and each has served one session. Run with
// DTMA_BENCH_BRIDGE=1 go test -run TestBenchStdioRSS -v ./e2e/
func TestBenchStdioRSS(t *testing.T) {
	if os.Getenv("DTMA_BENCH_BRIDGE") == "" {
		t.Skip("set DTMA_BENCH_BRIDGE=1 to run the bridge benchmarks")
	}
	const n = 50
	image := dockertest.MCPStdioImage(t)
	// 50 instances need more than the harness's 40 ports; a busy port in
	// this range is skipped by the agent's probe.
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_PORT_RANGE=28000-28199"}})
	rss := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
				return kb
			}
		}
		return 0
	}
	before := rss()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	ports := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var inst dtmahttp.Instance
			a.Expect(201, "POST", "/v1/instances", map[string]any{"name": fmt.Sprintf("stdio-%d", i), "image": image,
				"mcp": map[string]any{"transport": "stdio"}}).Decode(t, &inst)
			ports[i] = inst.MCP.BridgePort
		}()
	}
	wg.Wait()
	for _, p := range ports {
		url := "http://127.0.0.1:" + strconv.Itoa(p) + "/mcp"
		Eventually(t, 60*time.Second, "bridge "+url, func() bool {
			cs, err := mcpConnect(url, "", nil)
			if err != nil {
				return false
			}
			defer cs.Close()
			_, err = mcpEcho(cs, "x")
			return err == nil
		})
	}
	after := rss()
	t.Logf("agent RSS: %d kB with no instance, %d kB with %d stdio instances bridged (each served a session): %.0f kB per instance",
		before, after, n, float64(after-before)/n)
}
