package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func hostPort(t *testing.T, url string) string {
	t.Helper()
	return strings.TrimPrefix(url, "http://")
}

func mcpServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "fixture", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	return s
}

func probe(c dtma.HealthCheck, addr string) Result {
	c = c.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	return Probe(ctx, c, addr)
}

func TestProbeMCP(t *testing.T) {
	s := mcpServer()
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	mux.Handle("/sse", mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil))
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	addr := hostPort(t, srv.URL)

	if r := probe(dtma.HealthCheck{Type: dtma.CheckMCP}, addr); r.Err != nil || r.Detail != "tools=1" {
		t.Fatalf("streamable: %+v", r)
	}
	if r := probe(dtma.HealthCheck{Type: dtma.CheckMCP, Transport: dtma.CheckMCPSSE}, addr); r.Err != nil || r.Detail != "tools=1" {
		t.Fatalf("sse: %+v", r)
	}
	if r := probe(dtma.HealthCheck{Type: dtma.CheckMCP, Path: "/broken"}, addr); r.Err == nil || !strings.Contains(r.Err.Error(), "mcp initialize") {
		t.Fatalf("broken endpoint: %+v", r)
	}
	// A plain HTTP server that is not MCP fails an mcp check.
	if r := probe(dtma.HealthCheck{Type: dtma.CheckMCP, Path: "/nothing"}, addr); r.Err == nil {
		t.Fatalf("404 endpoint passes: %+v", r)
	}
}

func TestProbeHangTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	for _, c := range []dtma.HealthCheck{{Type: dtma.CheckMCP}, {Type: dtma.CheckHTTP}} {
		c.Interval, c.Timeout = time.Second, 300*time.Millisecond
		r := probe(c, hostPort(t, srv.URL))
		if r.Err == nil || !strings.Contains(r.Err.Error(), "no answer within 300ms") {
			t.Errorf("%s on a hung server: %+v", c.Type, r)
		}
	}
}

func TestProbeHTTPAndTCP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	addr := hostPort(t, srv.URL)
	cases := []struct {
		c  dtma.HealthCheck
		ok bool
	}{
		{dtma.HealthCheck{Type: dtma.CheckHTTP, Path: "/ok"}, true},
		{dtma.HealthCheck{Type: dtma.CheckHTTP, Path: "/moved"}, true},
		{dtma.HealthCheck{Type: dtma.CheckHTTP, Path: "/moved", ExpectStatus: 200}, false},
		{dtma.HealthCheck{Type: dtma.CheckHTTP, Path: "/down"}, false},
		{dtma.HealthCheck{Type: dtma.CheckHTTP, Path: "/down", ExpectStatus: 503}, true},
		{dtma.HealthCheck{Type: dtma.CheckTCP}, true},
	}
	for _, tc := range cases {
		if r := probe(tc.c, addr); (r.Err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.c, r.Err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if r := probe(dtma.HealthCheck{Type: dtma.CheckTCP}, closed); r.Err == nil || !strings.Contains(r.Err.Error(), "refused") {
		t.Errorf("closed port: %+v", r)
	}
}

func TestAddr(t *testing.T) {
	for in, want := range map[dtma.Port]string{
		{HostPort: 80}:                     "127.0.0.1:80",
		{HostPort: 80, HostIP: "0.0.0.0"}:  "127.0.0.1:80",
		{HostPort: 80, HostIP: "::"}:       "[::1]:80",
		{HostPort: 80, HostIP: "10.1.2.3"}: "10.1.2.3:80",
	} {
		if got := Addr(in); got != want {
			t.Errorf("Addr(%+v) = %s, want %s", in, got, want)
		}
	}
}
