// Command mcp is a small MCP server on the official go-sdk, the fixture of
// the health-check tests. It is built statically (CGO_ENABLED=0) and copied
// into a FROM scratch image by internal/dockertest.MCPImage.
//
// It serves Streamable HTTP at /mcp and the older HTTP+SSE transport at
// /sse, with one tool ("echo"), and GET /healthz for http checks. Its mode,
// set by MCP_MODE at start and changed at run time by
// POST /control?mode=MODE (which always answers), is one of:
//
//	ok     serve normally (default)
//	hang   accept requests to /mcp, /sse and /healthz and never answer
//	error  answer them with 500
//	die    exit with code 3 at once (POST /control?mode=die)
//
// GET /control answers the mode and the number of requests the MCP and
// health endpoints have seen ("ok 12"). PORT sets the port (default 8080).
// Every request is logged to stdout as "request METHOD /path"; SIGTERM
// and SIGINT make it exit 0 promptly.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type state struct {
	mu    sync.Mutex
	mode  string
	count int
}

func (s *state) get() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode, s.count
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	st := &state{mode: "ok"}
	if m := os.Getenv("MCP_MODE"); m != "" {
		st.mode = m
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}

	server := mcp.NewServer(&mcp.Implementation{Name: "dtma-test-mcp", Version: "1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "answers its text"}, func(_ context.Context, _ *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	get := func(*http.Request) *mcp.Server { return server }

	// gate applies the mode to an endpoint.
	gate := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st.mu.Lock()
			st.count++
			mode := st.mode
			st.mu.Unlock()
			switch mode {
			case "hang":
				<-r.Context().Done()
			case "error":
				http.Error(w, "told to fail", http.StatusInternalServerError)
			default:
				h.ServeHTTP(w, r)
			}
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", gate(mcp.NewStreamableHTTPHandler(get, nil)))
	mux.Handle("/sse", gate(mcp.NewSSEHandler(get, nil)))
	mux.Handle("GET /healthz", gate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })))
	mux.HandleFunc("GET /control", func(w http.ResponseWriter, r *http.Request) {
		mode, n := st.get()
		fmt.Fprintf(w, "%s %d", mode, n)
	})
	mux.HandleFunc("POST /control", func(w http.ResponseWriter, r *http.Request) {
		mode := r.URL.Query().Get("mode")
		switch mode {
		case "ok", "hang", "error":
		case "die":
			fmt.Println("told to die")
			os.Exit(3)
		default:
			http.Error(w, "mode must be ok, hang, error or die", http.StatusBadRequest)
			return
		}
		st.mu.Lock()
		st.mode = mode
		st.mu.Unlock()
		fmt.Fprint(w, mode)
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %s %s\n", r.Method, r.URL.Path)
		mux.ServeHTTP(w, r)
	})

	if st.mode == "die" {
		fmt.Println("told to die")
		os.Exit(3)
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: logged, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("listening on :%s\n", port)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
}
