package mcpbridge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentopia/dtma/mcpbridge"
)

// A benchmark, not a test (figures in BENCHMARKS.md): run with
//
//	DTMA_BENCH_BRIDGE=1 go test -run 'TestBenchBridge' -v ./mcpbridge/
//
// TestBenchBridgeMemory measures what a bridge costs the agent per stdio
// instance, idle and with one HTTP session, at 50 and 200 bridges. Each
// bridge is attached to a minimal in-process stdio server (a few
// goroutines answering initialize, tools/list and echo) so that the
// figure is the bridge's alone, not a server's.
func TestBenchBridgeMemory(t *testing.T) {
	if os.Getenv("DTMA_BENCH_BRIDGE") == "" {
		t.Skip("set DTMA_BENCH_BRIDGE=1 to run the bridge benchmarks")
	}
	for _, n := range []int{50, 200} {
		ctx, cancel := context.WithCancel(context.Background())
		before := memNow()
		var urls []string
		var wg sync.WaitGroup
		for i := range n {
			b := mcpbridge.New(mcpbridge.Config{Instance: strconv.Itoa(i), Attach: func(context.Context) (io.ReadWriteCloser, error) { return tinyServer(), nil }})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(2)
			go func() { defer wg.Done(); b.Run(ctx) }()
			go func() { defer wg.Done(); b.Serve(ctx, ln) }()
			waitFor(t, "attach", func() bool { return b.Stats().Attached })
			urls = append(urls, "http://"+ln.Addr().String()+"/mcp")
		}
		idle := memNow()
		var sessions []*mcp.ClientSession
		for _, u := range urls {
			cs, err := tryConnect(u, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, cs)
		}
		// The clients live in this process too: measure them alone by
		// closing the bridges' side last is not possible, so the session
		// figure includes the client's state (an upper bound).
		withSession := memNow()
		t.Logf("%d bridges: idle %.0f KiB heap+stacks each (%d goroutines each); with one session and a call %.0f KiB each incl. the in-process client",
			n, float64(idle.bytes-before.bytes)/float64(n)/1024, (idle.goroutines-before.goroutines)/n,
			float64(withSession.bytes-before.bytes)/float64(n)/1024)
		for _, cs := range sessions {
			cs.Close()
		}
		cancel()
		wg.Wait()
	}
}

type mem struct {
	bytes      uint64
	goroutines int
}

func memNow() mem {
	for range 3 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return mem{bytes: m.HeapInuse + m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// tinyServer is a minimal stdio MCP server: it answers initialize,
// tools/list (one echo tool), tools/call (echo) and ping.
func tinyServer() io.ReadWriteCloser {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() {
		sc := bufio.NewScanner(inR)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var req struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
				Params struct {
					ProtocolVersion string         `json:"protocolVersion"`
					Arguments       map[string]any `json:"arguments"`
				} `json:"params"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil || req.ID == nil {
				continue
			}
			var result any
			switch req.Method {
			case "initialize":
				result = map[string]any{"protocolVersion": req.Params.ProtocolVersion, "capabilities": map[string]any{"tools": map[string]any{}},
					"serverInfo": map[string]any{"name": "tiny", "version": "1"}}
			case "tools/list":
				result = map[string]any{"tools": []any{map[string]any{"name": "echo", "inputSchema": map[string]any{"type": "object"}}}}
			case "tools/call":
				result = map[string]any{"content": []any{map[string]any{"type": "text", "text": fmt.Sprint(req.Params.Arguments["text"])}}}
			default:
				result = map[string]any{}
			}
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
			if _, err := outW.Write(append(b, '\n')); err != nil {
				return
			}
		}
		outW.Close()
	}()
	return &pipeRWC{r: outR, w: inW, closers: []io.Closer{inW, outR}}
}

type pipeRWC struct {
	r       io.Reader
	w       io.Writer
	closers []io.Closer
}

func (p *pipeRWC) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeRWC) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeRWC) Close() error {
	for _, c := range p.closers {
		c.Close()
	}
	return nil
}

// TestBenchBridgeLatency measures tools/call (echo) against one real
// mcpstdio container: over direct stdio (the SDK's client on the attach
// stream) and through the bridge (the SDK's Streamable HTTP client), same
// container, 1000 sequential calls each after 100 warm-up calls.
func TestBenchBridgeLatency(t *testing.T) {
	if os.Getenv("DTMA_BENCH_BRIDGE") == "" {
		t.Skip("set DTMA_BENCH_BRIDGE=1 to run the bridge benchmarks")
	}
	f := newFixture(t, nil)
	ctx := context.Background()
	measure := func(cs *mcp.ClientSession) (p50, p99 time.Duration) {
		var d []time.Duration
		for i := range 1100 {
			start := time.Now()
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil {
				t.Fatal(err)
			}
			if i >= 100 {
				d = append(d, time.Since(start))
			}
		}
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100]
	}

	rw, err := f.rt.Attach(ctx, f.id, nil)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, nil).Connect(ctx, &mcp.IOTransport{Reader: rw, Writer: rw}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dp50, dp99 := measure(direct)
	direct.Close()
	rw.Close()

	// A second initialize of this server is refused (it is one process):
	// the bridge handles that, as after an agent restart.
	_, url := f.bridge(t, mcpbridge.Config{})
	cs := connect(t, url, nil, nil)
	bp50, bp99 := measure(cs)
	t.Logf("tools/call echo: direct stdio p50 %s p99 %s; through the bridge p50 %s p99 %s; added p50 %s",
		dp50, dp99, bp50, bp99, bp50-dp50)
}
