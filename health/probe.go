package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Result is the outcome of one probe.
type Result struct {
	Err     error         // nil when the tool answered as the check wants
	Latency time.Duration // from the first byte sent to the verdict
	Detail  string        // e.g. "tools=3" for an mcp check
}

// Addr returns the host:port a check on the published port p dials from
// the agent's host: the port's host IP, or loopback when it is published on
// every address ("", 0.0.0.0, ::). The agent runs on the host and tools sit
// on isolated bridge networks with inter-container traffic off, so the
// published port is the one address that is both reachable and the one
// the platform's clients use.
func Addr(p dtma.Port) string {
	ip := p.HostIP
	switch ip {
	case "", "0.0.0.0":
		ip = "127.0.0.1"
	case "::":
		ip = "::1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(p.HostPort))
}

// Probe runs check c (with defaults applied by the caller) against addr
// once, bounded by ctx (the caller sets the check's timeout). It never
// follows redirects and never keeps a connection for the next probe.
func Probe(ctx context.Context, c dtma.HealthCheck, addr string) Result {
	start := time.Now()
	var r Result
	switch c.Type {
	case dtma.CheckTCP:
		r.Err = probeTCP(ctx, addr)
	case dtma.CheckHTTP:
		r.Err = probeHTTP(ctx, c, addr)
	case dtma.CheckMCP:
		r.Detail, r.Err = probeMCP(ctx, c, addr)
	default:
		r.Err = fmt.Errorf("check type %q cannot be probed", c.Type)
	}
	r.Latency = time.Since(start)
	if r.Err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		r.Err = fmt.Errorf("no answer within %v", c.Timeout)
	}
	return r
}

func probeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp connect: %w", stripOp(err))
	}
	return conn.Close()
}

// client is a fresh HTTP client per probe: no connection outlives it, so a
// dead tool cannot hide behind an idle keep-alive connection, and no
// redirect is followed (a check asks one address, not wherever it points).
func client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func probeHTTP(ctx context.Context, c dtma.HealthCheck, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+c.Path, nil)
	if err != nil {
		return fmt.Errorf("http request: %w", err)
	}
	req.Header.Set("User-Agent", "dtma-health")
	resp, err := client().Do(req)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", c.Path, stripOp(err))
	}
	_ = resp.Body.Close()
	if c.ExpectStatus != 0 && resp.StatusCode != c.ExpectStatus {
		return fmt.Errorf("http GET %s: status %d, want %d", c.Path, resp.StatusCode, c.ExpectStatus)
	}
	if c.ExpectStatus == 0 && (resp.StatusCode < 200 || resp.StatusCode > 399) {
		return fmt.Errorf("http GET %s: status %d", c.Path, resp.StatusCode)
	}
	return nil
}

// probeMCP connects an MCP client (initialize), pings, and, when the server
// offers tools, lists them: the count is the detail; a failing tools/list
// fails the probe (the tool would not serve its tools).
func probeMCP(ctx context.Context, c dtma.HealthCheck, addr string) (string, error) {
	endpoint := "http://" + addr + c.Path
	var t mcp.Transport
	if c.Transport == dtma.CheckMCPSSE {
		t = &mcp.SSEClientTransport{Endpoint: endpoint, HTTPClient: client()}
	} else {
		t = &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: client(), MaxRetries: -1, DisableStandaloneSSE: true}
	}
	cl := mcp.NewClient(&mcp.Implementation{Name: "dtma-health", Version: "1"}, nil)
	cs, err := cl.Connect(ctx, t, nil)
	if err != nil {
		return "", fmt.Errorf("mcp initialize: %w", stripOp(err))
	}
	defer func() { _ = cs.Close() }()
	if err := cs.Ping(ctx, nil); err != nil {
		return "", fmt.Errorf("mcp ping: %w", stripOp(err))
	}
	init := cs.InitializeResult()
	if init == nil || init.Capabilities == nil || init.Capabilities.Tools == nil {
		return "tools=none", nil
	}
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("mcp tools/list: %w", stripOp(err))
	}
	return "tools=" + strconv.Itoa(len(res.Tools)), nil
}

// stripOp shortens an error for the last_error field: the message without
// Go's "Get \"http://...\":" prefixes, capped at 200 bytes.
func stripOp(err error) error {
	msg := err.Error()
	if i := strings.LastIndex(msg, "\": "); i >= 0 && strings.Contains(msg[:i], "http://") {
		msg = msg[i+3:]
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return errors.New(msg)
}
