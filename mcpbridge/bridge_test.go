package mcpbridge_test

//lint:file-ignore SA1019 logging and sampling are deprecated only in the sessionless 2026-07-28 revision; the bridge speaks the session revisions, where MCP stdio servers use them, and the issue asks for them to be forwarded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/mcpbridge"
)

// fixture is one running mcpstdio container and the docker runtime that
// made it. The container carries dtma.test=<run id> and is removed when
// the test ends, also on failure.
type fixture struct {
	rt *docker.Runtime
	id string
}

func newFixture(t *testing.T, env map[string]string) *fixture {
	t.Helper()
	c := dockertest.Client(t)
	image := dockertest.MCPStdioImage(t)
	rt, err := docker.New(docker.Options{DefaultHostIP: "127.0.0.1", ExtraLabels: dockertest.Labels(), Network: docker.NetworkBridge})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	name := "dtma-test-" + dockertest.RunID() + "-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	host := "test-" + dockertest.RunID() + "-mcpbridge"
	ctx := context.Background()
	id, err := rt.CreateContainer(ctx, dtma.ContainerConfig{
		Name: name, Image: image, Env: env, Stdio: true,
		Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, dtma.LabelInstance: name},
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.RemoveContainer(context.Background(), id); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
	})
	_ = c
	if _, err := rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	return &fixture{rt: rt, id: id}
}

// bridge runs a bridge for the fixture's container on 127.0.0.1 and
// returns it with its URL; it stops when the test ends.
func (f *fixture) bridge(t *testing.T, cfg mcpbridge.Config) (*mcpbridge.Bridge, string) {
	t.Helper()
	cfg.Instance = t.Name()
	if os.Getenv("MCPBRIDGE_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.Attach = func(ctx context.Context) (io.ReadWriteCloser, error) { return f.rt.Attach(ctx, f.id, nil) }
	b := mcpbridge.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.Run(ctx) }()
	go func() { defer wg.Done(); b.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, "the bridge to attach", func() bool { return b.Stats().Attached })
	return b, "http://" + ln.Addr().String() + "/mcp"
}

// waitFor polls cond every 50 ms for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type headerRT struct {
	h  http.Header
	rt http.RoundTripper
}

func (h headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.h {
		r.Header[k] = v
	}
	return h.rt.RoundTrip(r)
}

// connect opens an HTTP client session of the SDK to url.
func connect(t *testing.T, url string, opts *mcp.ClientOptions, header http.Header) *mcp.ClientSession {
	t.Helper()
	cs, err := tryConnect(url, opts, header)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func tryConnect(url string, opts *mcp.ClientOptions, header http.Header) (*mcp.ClientSession, error) {
	hc := &http.Client{Transport: headerRT{h: header, rt: http.DefaultTransport}}
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
}

func callText(t *testing.T, cs *mcp.ClientSession, params *mcp.CallToolParams) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("call %s: %v", params.Name, err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("call %s: error result %+v", params.Name, res)
	}
	return res.Content[0].(*mcp.TextContent).Text
}

// TestBridge: the SDK's Streamable HTTP client reaches the stdio server
// through the bridge: initialize (the server's own name), tools/list,
// tools/call, resources, prompts, completions.
func TestBridge(t *testing.T) {
	f := newFixture(t, nil)
	_, url := f.bridge(t, mcpbridge.Config{})
	cs := connect(t, url, nil, nil)
	ctx := context.Background()

	if got := cs.InitializeResult().ServerInfo.Name; got != "mcpstdio" {
		t.Errorf("server name %q, want the stdio server's mcpstdio", got)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	for _, want := range []string{"echo", "sleep", "progress", "notify", "garbage", "big", "exit"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("tools/list %v lacks %s", names, want)
		}
	}
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello bridge"}}); got != "hello bridge" {
		t.Errorf("echo answered %q", got)
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "fixture://hello"})
	if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "hello" {
		t.Errorf("resources/read: %+v, %v", rr, err)
	}
	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "ada"}})
	if err != nil || len(pr.Messages) != 1 || pr.Messages[0].Content.(*mcp.TextContent).Text != "hello ada" {
		t.Errorf("prompts/get: %+v, %v", pr, err)
	}
	cr, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"}, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "al"}})
	if err != nil || len(cr.Completion.Values) != 2 {
		t.Errorf("completion/complete: %+v, %v", cr, err)
	}
}

// TestBridgeConcurrentSessions: 20 HTTP sessions at once, each calling echo
// and progress with the SAME progress token: every answer is the session's
// own and every session gets exactly its own progress notifications.
func TestBridgeConcurrentSessions(t *testing.T) {
	f := newFixture(t, nil)
	b, url := f.bridge(t, mcpbridge.Config{})
	const sessions, calls, steps = 20, 5, 3
	var wg sync.WaitGroup
	errs := make(chan error, sessions*calls*2)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mu sync.Mutex
			var got []string
			cs, err := tryConnect(url, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
				mu.Lock()
				got = append(got, fmt.Sprint(r.Params.ProgressToken))
				mu.Unlock()
			}}, nil)
			if err != nil {
				errs <- fmt.Errorf("session %d: connect: %v", i, err)
				return
			}
			defer cs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for j := range calls {
				want := fmt.Sprintf("session %d call %d", i, j)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": want}})
				if err != nil {
					errs <- fmt.Errorf("session %d: echo: %v", i, err)
					return
				}
				if txt := res.Content[0].(*mcp.TextContent).Text; txt != want {
					errs <- fmt.Errorf("session %d got %q, want %q (crossed answer)", i, txt, want)
				}
			}
			p := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"steps": steps}}
			p.SetProgressToken("same-token")
			if _, err := cs.CallTool(ctx, p); err != nil {
				errs <- fmt.Errorf("session %d: progress: %v", i, err)
				return
			}
			// Notifications may trail the answer on the stream: wait for
			// the expected count, then make sure no extra arrives.
			deadline := time.Now().Add(30 * time.Second)
			for {
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n >= steps || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			// A ping round trip flushes anything in flight for this session.
			_ = cs.Ping(ctx, nil)
			mu.Lock()
			defer mu.Unlock()
			if len(got) != steps {
				errs <- fmt.Errorf("session %d got %d progress notifications, want %d (%v)", i, len(got), steps, got)
			}
			for _, tok := range got {
				if tok != "same-token" {
					errs <- fmt.Errorf("session %d got progress for token %q", i, tok)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := b.Stats(); s.Attaches != 1 || s.Errors != 0 {
		t.Errorf("stats after the run: %+v", s)
	}
}

// TestBridgeNotifications: a log message reaches a session that set a
// level (and not one that did not); a tools/list_changed reaches every
// session, and tools/list then shows the new tool.
func TestBridgeNotifications(t *testing.T) {
	f := newFixture(t, nil)
	_, url := f.bridge(t, mcpbridge.Config{})
	type box struct {
		mu      sync.Mutex
		logs    []string
		changed int
	}
	open := func() (*mcp.ClientSession, *box) {
		bx := &box{}
		cs := connect(t, url, &mcp.ClientOptions{
			LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
				bx.mu.Lock()
				bx.logs = append(bx.logs, fmt.Sprint(r.Params.Data))
				bx.mu.Unlock()
			},
			ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
				bx.mu.Lock()
				bx.changed++
				bx.mu.Unlock()
			},
		}, nil)
		return cs, bx
	}
	a, ab := open()
	other, ob := open()
	ctx := context.Background()
	if err := a.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatalf("logging/setLevel: %v", err)
	}
	callText(t, a, &mcp.CallToolParams{Name: "notify", Arguments: map[string]any{"text": "log line one"}})
	waitFor(t, "the log message and list_changed at the caller", func() bool {
		ab.mu.Lock()
		defer ab.mu.Unlock()
		return len(ab.logs) == 1 && ab.changed >= 1
	})
	waitFor(t, "list_changed at the other session", func() bool {
		ob.mu.Lock()
		defer ob.mu.Unlock()
		return ob.changed >= 1
	})
	if ab.logs[0] != "log line one" {
		t.Errorf("log data %q", ab.logs[0])
	}
	ob.mu.Lock()
	if len(ob.logs) != 0 {
		t.Errorf("a session that set no level got log messages: %v", ob.logs)
	}
	ob.mu.Unlock()
	tools, err := other.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tl := range tools.Tools {
		found = found || tl.Name == "extra1"
	}
	if !found {
		t.Errorf("tools/list after list_changed lacks extra1")
	}
}

// TestBridgeGarbageAndOversize: a non-JSON line on the server's stdout is
// skipped and counted; an answer over the limit is an error for that call
// only (no hang); the session keeps working after both.
func TestBridgeGarbageAndOversize(t *testing.T) {
	f := newFixture(t, map[string]string{"MCPSTDIO_GARBAGE": "1"})
	b, url := f.bridge(t, mcpbridge.Config{MaxMessageBytes: 64 << 10})
	cs := connect(t, url, nil, nil)
	callText(t, cs, &mcp.CallToolParams{Name: "garbage", Arguments: map[string]any{"text": "not json"}})
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after garbage"}}); got != "after garbage" {
		t.Errorf("echo after garbage: %q", got)
	}
	if s := b.Stats(); s.SkippedLines < 1 {
		t.Errorf("skipped lines %d, want >= 1", s.SkippedLines)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "big", Arguments: map[string]any{"bytes": 200 << 10}})
	if err == nil && !res.IsError {
		t.Fatalf("a 200 KiB answer passed a 64 KiB limit")
	}
	if ctx.Err() != nil {
		t.Fatalf("the oversized answer left the call hanging")
	}
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after big"}}); got != "after big" {
		t.Errorf("echo after an oversized answer: %q", got)
	}
	if s := b.Stats(); s.Errors < 1 || !s.Attached || s.Attaches != 1 {
		t.Errorf("stats: %+v", s)
	}
}

// TestBridgeServerExitAndRestart: the server exiting ends the sessions of
// that attach (their requests fail: lost session) and the bridge attaches
// again when Docker has restarted it; a container restart likewise. New
// sessions work each time.
func TestBridgeServerExitAndRestart(t *testing.T) {
	f := newFixture(t, nil)
	b, url := f.bridge(t, mcpbridge.Config{})
	cs := connect(t, url, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "exit", Arguments: map[string]any{"code": 3}}); err == nil {
		t.Errorf("a call whose server exited succeeded")
	}
	waitFor(t, "the bridge to re-attach after the exit", func() bool { s := b.Stats(); return s.Attached && s.Attaches >= 2 })
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err == nil {
		t.Errorf("the session of the exited server still answers")
	}
	cs2 := connect(t, url, nil, nil)
	if got := callText(t, cs2, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after exit"}}); got != "after exit" {
		t.Errorf("echo after exit: %q", got)
	}

	if err := f.rt.RestartContainer(context.Background(), f.id, time.Second); err != nil {
		t.Fatalf("restart: %v", err)
	}
	b.Reattach()
	waitFor(t, "the bridge to re-attach after the restart", func() bool { s := b.Stats(); return s.Attached && s.Attaches >= 3 })
	cs3 := connect(t, url, nil, nil)
	if got := callText(t, cs3, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after restart"}}); got != "after restart" {
		t.Errorf("echo after restart: %q", got)
	}
}

// TestBridgeReattachInitialized: a second bridge on a server the first one
// initialized (what an agent restart does, the container untouched) serves
// new sessions at once: the server's refusal of a second initialize is
// handled and the tools are still listed.
func TestBridgeReattachInitialized(t *testing.T) {
	f := newFixture(t, nil)
	first := mcpbridge.New(mcpbridge.Config{Instance: "first", Attach: func(ctx context.Context) (io.ReadWriteCloser, error) { return f.rt.Attach(ctx, f.id, nil) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { first.Run(ctx); close(done) }()
	waitFor(t, "the first bridge", func() bool { return first.Stats().Attached })
	cancel()
	<-done

	_, url := f.bridge(t, mcpbridge.Config{})
	cs := connect(t, url, nil, nil)
	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil || len(tools.Tools) < 7 {
		t.Fatalf("tools/list through the second bridge: %v, %v", tools, err)
	}
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "second bridge"}}); got != "second bridge" {
		t.Errorf("echo: %q", got)
	}
}

// TestBridgeAccess: with a token, a request without it is 401 and with it
// works; a foreign Origin is 403, a localhost one is served.
func TestBridgeAccess(t *testing.T) {
	f := newFixture(t, nil)
	const token = "bridge-token-0123456789"
	_, url := f.bridge(t, mcpbridge.Config{TokenHash: dtma.HashMCPToken(token)})
	post := func(h http.Header) int {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post(nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code := post(http.Header{"Authorization": {"Bearer wrong-token-0123456789"}}); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code := post(http.Header{"Authorization": {"Bearer " + token}, "Origin": {"http://evil.example"}}); code != http.StatusForbidden {
		t.Errorf("foreign origin: %d, want 403", code)
	}
	auth := http.Header{"Authorization": {"Bearer " + token}, "Origin": {"http://localhost:3000"}}
	cs := connect(t, url, nil, auth)
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "authorized"}}); got != "authorized" {
		t.Errorf("echo: %q", got)
	}
	if _, err := tryConnect(url, nil, nil); err == nil {
		t.Errorf("a client without the token connected")
	}
}

var _ = errors.New

// TestBridgeSampling: a server's sampling request made while serving a
// call goes to the session of that call (the only one with a request in
// flight), whose answer reaches the server; a session that did not declare
// sampling makes the server's request fail.
func TestBridgeSampling(t *testing.T) {
	f := newFixture(t, nil)
	_, url := f.bridge(t, mcpbridge.Config{})
	sampler := connect(t, url, &mcp.ClientOptions{CreateMessageHandler: func(_ context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
		return &mcp.CreateMessageResult{Model: "test", Role: "assistant", Content: &mcp.TextContent{Text: "model says " + r.Params.Messages[0].Content.(*mcp.TextContent).Text}}, nil
	}}, nil)
	if got := callText(t, sampler, &mcp.CallToolParams{Name: "sample", Arguments: map[string]any{"text": "hi"}}); got != "sampled: model says hi" {
		t.Errorf("sample through a sampling session: %q", got)
	}
	plain := connect(t, url, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := plain.CallTool(ctx, &mcp.CallToolParams{Name: "sample", Arguments: map[string]any{"text": "hi"}})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "did not declare sampling") {
		t.Errorf("sample through a session without sampling: %+v, %v", res, err)
	}
}
