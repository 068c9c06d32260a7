// Package mcpbridge serves a stdio MCP server (a container's stdin/stdout,
// attached through the Engine API) as MCP Streamable HTTP, inside the agent:
// no proxy process per tool.
//
// One client session of the official Go SDK speaks to the container over
// the attached stdio (stdioTransport); a front mcp.Server, filled with the
// server's tools, resources, resource templates and prompts and refilled
// on its list-changed notifications, serves any number of HTTP sessions
// through mcp.NewStreamableHTTPHandler. Every HTTP request is forwarded as a
// request of that one client session, so request ids are the SDK client's
// own sequence and never collide across HTTP sessions.
//
// Notifications: progress is routed to the HTTP session whose request
// carried the token (the bridge rewrites each token to one of its own, so
// two sessions may use the same token); logging messages go to every
// session at the level it set; list-changed notifications to every
// session; resource updates to the sessions subscribed to the resource.
//
// Server-to-client requests: sampling (sampling/createMessage) and
// elicitation (elicitation/create) are forwarded to the HTTP session that
// has a request in flight when exactly one has (a stdio server asks them
// while serving a call), and refused with an error when none or several
// have, or that session did not declare the capability. roots/list is
// answered by the bridge with no roots (the bridge declares no roots
// capability: a container's filesystem is not the client's).
package mcpbridge

//lint:file-ignore SA1019 logging and sampling are deprecated only in the sessionless 2026-07-28 revision; the bridge speaks the session revisions, where MCP stdio servers use them, and the issue asks for them to be forwarded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentopia/dtma"
)

// DefaultMaxMessageBytes is the default limit on one MCP message in either
// direction.
const DefaultMaxMessageBytes = 4 << 20

// The bridge speaks the session-based protocol revisions on both sides: its
// forwarding (one server session, notifications routed per HTTP session)
// is built on sessions, which the 2026-07-28 revision (SEP-2575,
// stateless) removes. Clients that ask for it are answered with the newest
// session revision, as the lifecycle spec says.
const sessionProtocol = "2025-11-25"

var frontProtocols = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// Config configures a Bridge.
type Config struct {
	// Instance names the instance in logs.
	Instance string
	// Attach attaches to the container's stdio (dtma.Runtime.Attach);
	// called at start and after every loss of the stream.
	Attach func(ctx context.Context) (io.ReadWriteCloser, error)
	// TokenHash, when set, is the hex SHA-256 of the bearer token every
	// HTTP request must carry (dtma.MCP.TokenHash).
	TokenHash string
	// AllowedOrigins are the Origin header values accepted besides none
	// (non-browser clients send none) and http(s)://localhost|127.0.0.1|[::1]
	// on any port. Another Origin is a 403 (DNS rebinding protection, as
	// the MCP transport spec asks).
	AllowedOrigins []string
	// MaxMessageBytes caps one message (HTTP body, server line);
	// DefaultMaxMessageBytes when zero.
	MaxMessageBytes int
	// SessionIdle closes HTTP sessions idle this long (default 30 min).
	SessionIdle time.Duration
	Logger      *slog.Logger
}

// Stats is the bridge's state for health and metrics.
type Stats struct {
	Attached     bool      // the client session to the server is up
	Sessions     int       // HTTP sessions open
	Attaches     uint64    // successful attaches so far
	MessagesIn   uint64    // messages read from the server
	MessagesOut  uint64    // messages written to the server
	BytesIn      uint64    // bytes read from the server
	BytesOut     uint64    // bytes written to the server
	SkippedLines uint64    // non-JSON lines on the server's stdout
	Errors       uint64    // oversized messages, write errors, failed attaches
	LastError    string    // why the last attach or session ended, "" when none
	Since        time.Time // when the current attach began (zero when detached)
}

type counters struct {
	msgsIn, msgsOut, bytesIn, bytesOut, skipped, errors, attaches atomic.Uint64
}

// Bridge bridges one instance. Create it with New, run it with Run, serve
// it with Serve (or as an http.Handler).
type Bridge struct {
	cfg   Config
	log   *slog.Logger
	stats counters

	mu      sync.Mutex
	gen     *generation // nil while detached
	lastErr string
	kick    chan struct{}
}

// generation is one attach: its client session, front server and handler.
// HTTP sessions belong to a generation and end with it.
type generation struct {
	cs      *mcp.ClientSession
	front   *mcp.Server
	handler http.Handler
	since   time.Time

	mu       sync.Mutex
	inflight map[*mcp.ServerSession]int
	progress map[string]progressRoute   // bridge token -> origin
	names    map[string]map[string]bool // feature -> names on the front server
	seq      atomic.Uint64
	reinit   atomic.Bool
	log      *slog.Logger
}

type progressRoute struct {
	ctx   context.Context // the HTTP request's: notifications go on its stream
	ss    *mcp.ServerSession
	token any
}

// New returns a bridge; nothing runs until Run.
func New(cfg Config) *Bridge {
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("instance", cfg.Instance, "component", "mcpbridge")
	return &Bridge{cfg: cfg, log: log, kick: make(chan struct{}, 1)}
}

// Stats returns the bridge's current state and counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	g, last := b.gen, b.lastErr
	b.mu.Unlock()
	s := Stats{
		Attaches: b.stats.attaches.Load(), MessagesIn: b.stats.msgsIn.Load(), MessagesOut: b.stats.msgsOut.Load(),
		BytesIn: b.stats.bytesIn.Load(), BytesOut: b.stats.bytesOut.Load(), SkippedLines: b.stats.skipped.Load(),
		Errors: b.stats.errors.Load(), LastError: last,
	}
	if g != nil {
		s.Attached, s.Since = true, g.since
		for range g.front.Sessions() {
			s.Sessions++
		}
	}
	return s
}

// Reattach asks a detached bridge to attach now rather than after its
// backoff (the agent calls it when the container has started again).
func (b *Bridge) Reattach() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run attaches and serves until ctx ends: whenever the stream ends (the
// server exited, the container restarted, the daemon went away) every HTTP
// session of that attach is closed (its requests then get 404, the spec's
// answer for a lost session, and the client starts a new one) and it
// attaches again, backing off from 100 ms to 5 s, or at once on
// Reattach. It returns nil when ctx ends; it never panics.
func (b *Bridge) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := b.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			b.stats.errors.Add(1)
			b.setErr(err)
			b.log.Warn("mcp bridge detached", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
			backoff = min(backoff*2, 5*time.Second)
		case <-b.kick:
			backoff = 100 * time.Millisecond
		}
		t.Stop()
	}
	return nil
}

func (b *Bridge) setErr(err error) {
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

// runOnce is one attach: connect, fill the front server, serve until the
// client session ends.
func (b *Bridge) runOnce(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mcp bridge: internal error: %v", r)
			b.log.Error("mcp bridge recovered from a panic", "panic", fmt.Sprint(r))
		}
	}()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	rwc, err := b.cfg.Attach(actx)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	g := &generation{since: time.Now(), inflight: map[*mcp.ServerSession]int{}, progress: map[string]progressRoute{}, names: map[string]map[string]bool{}, log: b.log}
	tr := &stdioTransport{rwc: rwc, max: b.cfg.MaxMessageBytes, log: b.log, stats: &b.stats, reinit: func() { g.reinit.Store(true) }, intercept: g.interceptProgress}
	client := mcp.NewClient(&mcp.Implementation{Name: "dtma-mcp-bridge", Version: "1"}, &mcp.ClientOptions{
		Capabilities:               &mcp.ClientCapabilities{Sampling: &mcp.SamplingCapabilities{}, Elicitation: &mcp.ElicitationCapabilities{}},
		CreateMessageHandler:       g.createMessage,
		ElicitationHandler:         g.elicit,
		LoggingMessageHandler:      g.forwardLog,
		ToolListChangedHandler:     func(ctx context.Context, _ *mcp.ToolListChangedRequest) { b.syncAsync(g, "tools") },
		PromptListChangedHandler:   func(ctx context.Context, _ *mcp.PromptListChangedRequest) { b.syncAsync(g, "prompts") },
		ResourceListChangedHandler: func(ctx context.Context, _ *mcp.ResourceListChangedRequest) { b.syncAsync(g, "resources") },
		ResourceUpdatedHandler: func(ctx context.Context, r *mcp.ResourceUpdatedNotificationRequest) {
			if f := g.getFront(); f != nil {
				_ = f.ResourceUpdated(ctx, r.Params)
			}
		},
	})
	cctx, ccancel := context.WithTimeout(actx, 30*time.Second)
	cs, err := client.Connect(cctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: sessionProtocol})
	ccancel()
	if err != nil {
		rwc.Close()
		return fmt.Errorf("initialize the server: %w", err)
	}
	defer cs.Close()
	g.cs = cs
	front := b.newFront(g)
	g.mu.Lock()
	g.front = front
	g.mu.Unlock()
	for _, what := range []string{"tools", "resources", "prompts"} {
		if err := b.sync(actx, g, what); err != nil {
			return fmt.Errorf("list %s: %w", what, err)
		}
	}
	if caps := b.serverCaps(g); caps.Logging != nil {
		if err := cs.SetLoggingLevel(actx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			b.log.Debug("server refused logging/setLevel", "err", err)
		}
	}
	g.handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.front }, &mcp.StreamableHTTPOptions{
		Logger:              b.log,
		SessionTimeout:      b.cfg.SessionIdle,
		MaxRequestBodyBytes: int64(b.cfg.MaxMessageBytes),
	})
	b.stats.attaches.Add(1)
	b.mu.Lock()
	b.gen, b.lastErr = g, ""
	b.mu.Unlock()
	b.log.Info("mcp bridge attached", "protocol", cs.InitializeResult().ProtocolVersion)

	waitErr := make(chan error, 1)
	go func() { waitErr <- cs.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
	}
	b.mu.Lock()
	b.gen = nil
	b.mu.Unlock()
	for ss := range g.front.Sessions() {
		ss.Close()
	}
	if ctx.Err() != nil {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("the server's stdout ended (exited or restarted)")
	}
	return err
}

// serverCaps returns the server's capabilities.
func (b *Bridge) serverCaps(g *generation) *mcp.ServerCapabilities {
	if r := g.cs.InitializeResult(); r != nil && r.Capabilities != nil {
		return r.Capabilities
	}
	return &mcp.ServerCapabilities{}
}

// newFront returns the front server: the server's name, instructions and
// capabilities, with handlers that forward to the client session.
func (b *Bridge) newFront(g *generation) *mcp.Server {
	init := g.cs.InitializeResult()
	impl := &mcp.Implementation{Name: "mcp-stdio-server", Version: "unknown"}
	instructions := ""
	if init != nil {
		if init.ServerInfo != nil {
			impl = init.ServerInfo
		}
		instructions = init.Instructions
	}
	up := b.serverCaps(g)
	caps := &mcp.ServerCapabilities{Logging: up.Logging, Completions: up.Completions}
	if up.Tools != nil {
		caps.Tools = &mcp.ToolCapabilities{ListChanged: true}
	}
	if up.Prompts != nil {
		caps.Prompts = &mcp.PromptCapabilities{ListChanged: true}
	}
	if up.Resources != nil {
		caps.Resources = &mcp.ResourceCapabilities{ListChanged: true, Subscribe: up.Resources.Subscribe}
	}
	opts := &mcp.ServerOptions{Instructions: instructions, Capabilities: caps, Logger: b.log, SupportedProtocolVersions: frontProtocols}
	if up.Completions != nil {
		opts.CompletionHandler = func(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			defer g.enter(req.Session)()
			return g.cs.Complete(ctx, req.Params)
		}
	}
	if up.Resources != nil && up.Resources.Subscribe {
		opts.SubscribeHandler = func(ctx context.Context, req *mcp.SubscribeRequest) error {
			return g.cs.Subscribe(ctx, req.Params)
		}
		opts.UnsubscribeHandler = func(context.Context, *mcp.UnsubscribeRequest) error {
			// Other sessions may still be subscribed; the front server
			// only delivers updates to subscribed sessions anyway.
			return nil
		}
	}
	return mcp.NewServer(impl, opts)
}

// getFront returns the front server, nil before it is made.
func (g *generation) getFront() *mcp.Server {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.front
}

// enter counts a request of ss in flight (for routing server-to-client
// requests); the returned func ends it.
func (g *generation) enter(ss *mcp.ServerSession) func() {
	g.mu.Lock()
	g.inflight[ss]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.inflight[ss]--; g.inflight[ss] <= 0 {
			delete(g.inflight, ss)
		}
		g.mu.Unlock()
	}
}

// soleSession returns the one HTTP session with a request in flight.
func (g *generation) soleSession() (*mcp.ServerSession, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.inflight) != 1 {
		return nil, fmt.Errorf("the bridge cannot tell which client this request is for (%d clients have requests in flight)", len(g.inflight))
	}
	for ss := range g.inflight {
		return ss, nil
	}
	return nil, nil
}

func (g *generation) createMessage(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	ss, err := g.soleSession()
	if err != nil {
		return nil, err
	}
	if p := ss.InitializeParams(); p == nil || p.Capabilities == nil || p.Capabilities.Sampling == nil {
		return nil, errors.New("the client did not declare sampling")
	}
	return ss.CreateMessage(ctx, req.Params)
}

func (g *generation) elicit(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	ss, err := g.soleSession()
	if err != nil {
		return nil, err
	}
	if p := ss.InitializeParams(); p == nil || p.Capabilities == nil || p.Capabilities.Elicitation == nil {
		return nil, errors.New("the client did not declare elicitation")
	}
	return ss.Elicit(ctx, req.Params)
}

// withProgress rewrites a request's progress token to one of the bridge's
// own and routes the server's progress for it to ss; done forgets it.
func (g *generation) withProgress(ctx context.Context, ss *mcp.ServerSession, meta mcp.Meta) (mcp.Meta, func()) {
	tok, ok := meta["progressToken"]
	if !ok || tok == nil {
		return meta, func() {}
	}
	own := fmt.Sprintf("dtma-%d", g.seq.Add(1))
	out := make(mcp.Meta, len(meta))
	for k, v := range meta {
		out[k] = v
	}
	out["progressToken"] = own
	g.mu.Lock()
	g.progress[own] = progressRoute{ctx: ctx, ss: ss, token: tok}
	g.mu.Unlock()
	return out, func() {
		g.mu.Lock()
		delete(g.progress, own)
		g.mu.Unlock()
	}
}

// interceptProgress forwards a progress notification to the session of the
// request that carries its token (consumed: the SDK client never sees it);
// one for no request in flight is dropped.
func (g *generation) interceptProgress(msg jsonrpc.Message) bool {
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.IsCall() || req.Method != "notifications/progress" {
		return false
	}
	var p mcp.ProgressNotificationParams
	if json.Unmarshal(req.Params, &p) != nil {
		return true
	}
	g.mu.Lock()
	route, ok := g.progress[fmt.Sprint(p.ProgressToken)]
	g.mu.Unlock()
	if !ok {
		return true // a token of no request in flight: dropped
	}
	p.ProgressToken = route.token
	if err := route.ss.NotifyProgress(route.ctx, &p); err != nil {
		g.log.Debug("progress notification not delivered", "err", err)
	}
	return true
}

func (g *generation) forwardLog(ctx context.Context, req *mcp.LoggingMessageRequest) {
	f := g.getFront()
	if f == nil {
		return
	}
	for ss := range f.Sessions() {
		if err := ss.Log(ctx, req.Params); err != nil {
			g.log.Debug("log message not delivered", "session", ss.ID(), "err", err)
		}
	}
}

// syncAsync refills one feature list after a list-changed notification,
// off the client session's reading goroutine.
func (b *Bridge) syncAsync(g *generation, what string) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.log.Error("mcp bridge recovered from a panic", "panic", fmt.Sprint(r))
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if g.getFront() == nil {
			return // not filled yet: the first sync follows
		}
		if err := b.sync(ctx, g, what); err != nil {
			b.log.Warn("mcp bridge could not refresh the server's list", "list", what, "err", err)
		}
	}()
}

// sync makes the front server's list of what (tools, resources, prompts)
// the server's. A server without the capability has an empty list; after a
// re-initialize (capabilities unknown) a list the server refuses is empty.
func (b *Bridge) sync(ctx context.Context, g *generation, what string) error {
	up := b.serverCaps(g)
	lenient := g.reinit.Load()
	switch what {
	case "tools":
		if up.Tools == nil {
			return nil
		}
		keep := map[string]bool{}
		for t, err := range g.cs.Tools(ctx, nil) {
			if err != nil {
				if lenient {
					break
				}
				return err
			}
			keep[t.Name] = true
			b.addTool(g, t)
		}
		if gone := g.replaceNames("tools", keep); len(gone) > 0 {
			g.front.RemoveTools(gone...)
		}
	case "prompts":
		if up.Prompts == nil {
			return nil
		}
		keep := map[string]bool{}
		defer func() {
			if gone := g.replaceNames("prompts", keep); len(gone) > 0 {
				g.front.RemovePrompts(gone...)
			}
		}()
		for p, err := range g.cs.Prompts(ctx, nil) {
			if err != nil {
				if lenient {
					break
				}
				return err
			}
			keep[p.Name] = true
			name := p.Name
			g.front.AddPrompt(p, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				defer g.enter(req.Session)()
				params := *req.Params
				params.Name = name
				return g.cs.GetPrompt(ctx, &params)
			})
		}
	case "resources":
		if up.Resources == nil {
			return nil
		}
		read := func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			defer g.enter(req.Session)()
			return g.cs.ReadResource(ctx, req.Params)
		}
		keep := map[string]bool{}
		defer func() {
			if gone := g.replaceNames("resources", keep); len(gone) > 0 {
				g.front.RemoveResources(gone...)
			}
		}()
		for r, err := range g.cs.Resources(ctx, nil) {
			if err != nil {
				if lenient {
					break
				}
				return err
			}
			keep[r.URI] = true
			g.front.AddResource(r, read)
		}
		for t, err := range g.cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				break // templates are optional even for servers with resources
			}
			func() {
				defer func() { _ = recover() }() // a template the SDK cannot parse is skipped
				g.front.AddResourceTemplate(t, read)
			}()
		}
	}
	return nil
}

// addTool adds (or replaces) a forwarding tool; a tool the SDK refuses
// (an input schema that is not an object) is logged and skipped.
func (b *Bridge) addTool(g *generation, t *mcp.Tool) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Warn("mcp server tool skipped", "tool", t.Name, "reason", fmt.Sprint(r))
		}
	}()
	if t.InputSchema == nil {
		t.InputSchema = json.RawMessage(`{"type":"object"}`)
	}
	name := t.Name
	g.front.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		defer g.enter(req.Session)()
		meta, done := g.withProgress(ctx, req.Session, req.Params.Meta)
		defer done()
		return g.cs.CallTool(ctx, &mcp.CallToolParams{Meta: meta, Name: name, Arguments: req.Params.Arguments})
	})
}

// replaceNames records keep as the front server's names of one feature
// and returns the names it had that keep lacks.
func (g *generation) replaceNames(feature string, keep map[string]bool) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var gone []string
	for name := range g.names[feature] {
		if !keep[name] {
			gone = append(gone, name)
		}
	}
	g.names[feature] = keep
	return gone
}

// ServeHTTP serves MCP Streamable HTTP at any path: the bearer token (when
// configured) and the Origin are checked first (401, 403); while detached a
// request for a session is 404 (the session is lost; the client starts a
// new one) and a new session 503 with Retry-After.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			b.log.Error("mcp bridge recovered from a panic", "panic", fmt.Sprint(v))
		}
	}()
	if b.cfg.TokenHash != "" {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !dtma.CheckMCPToken(b.cfg.TokenHash, strings.TrimSpace(tok)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mcp"`)
			httpError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
	}
	if o := r.Header.Get("Origin"); o != "" && !b.originAllowed(o) {
		httpError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	b.mu.Lock()
	g := b.gen
	b.mu.Unlock()
	if g == nil {
		if r.Header.Get("Mcp-Session-Id") != "" {
			httpError(w, http.StatusNotFound, "session not found (the server restarted); start a new session")
			return
		}
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "the MCP server is not attached yet")
		return
	}
	g.handler.ServeHTTP(w, r)
}

func (b *Bridge) originAllowed(origin string) bool {
	for _, o := range b.cfg.AllowedOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	for _, scheme := range []string{"http://", "https://"} {
		rest, ok := strings.CutPrefix(strings.ToLower(origin), scheme)
		if !ok {
			continue
		}
		host := rest
		if h, _, err := net.SplitHostPort(rest); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if host == "localhost" || host == "127.0.0.1" || host == "::1" {
			return true
		}
	}
	return false
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": -32000, "message": msg}})
	w.Write(b)
}

// Serve serves the bridge on ln until ctx ends (then it closes the
// listener and every connection). It returns nil after ctx ends.
func (b *Bridge) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelDebug)}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if ctx.Err() != nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
