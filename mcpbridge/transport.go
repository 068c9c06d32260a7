package mcpbridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdioTransport is an mcp.Transport over an attached container's stdio:
// newline-delimited JSON-RPC, one message a line, as MCP's stdio transport
// says. Unlike the SDK's own it is defensive about what the server prints:
// a line that is not a JSON-RPC message is logged and skipped, a line over
// max bytes is skipped (a response among them is answered with an error so
// the caller is not left waiting), and a second initialize of a server that
// is already initialized (the agent restarted while the container ran) is
// answered from what the bridge can learn instead (see reinit).
type stdioTransport struct {
	rwc   io.ReadWriteCloser
	max   int
	log   *slog.Logger
	stats *counters
	// reinit is set when the server refused initialize as a duplicate: the
	// bridge then probes the features by listing them.
	reinit func()
	// intercept, when set, sees every message read before the SDK does
	// and consumes it by returning true. Progress notifications are
	// forwarded this way, in the reading goroutine, so that they reach
	// the HTTP stream before the answer they precede.
	intercept func(jsonrpc.Message) bool
}

// Connect implements mcp.Transport.
func (t *stdioTransport) Connect(context.Context) (mcp.Connection, error) {
	return &stdioConn{t: t, r: bufio.NewReaderSize(t.rwc, 64<<10), closed: make(chan struct{})}, nil
}

type stdioConn struct {
	t *stdioTransport
	r *bufio.Reader

	wmu sync.Mutex // one message per write

	mu      sync.Mutex
	initID  jsonrpc.ID // the initialize request in flight
	initVer string     // its protocol version
	closeMu sync.Once
	closed  chan struct{}
}

// idPattern finds a message's id in the head of a line too long to decode.
var idPattern = regexp.MustCompile(`"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9]+)`)

// Read returns the next JSON-RPC message from the server's stdout.
func (c *stdioConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		line, tooLong, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if tooLong != nil {
			c.t.stats.errors.Add(1)
			if m := idPattern.FindSubmatch(tooLong); m != nil {
				var raw any
				if json.Unmarshal(m[1], &raw) == nil {
					if id, err := jsonrpc.MakeID(raw); err == nil {
						c.t.log.Warn("mcp server message over the bridge's limit answered with an error", "limit_bytes", c.t.max)
						return &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError,
							Message: fmt.Sprintf("the server's message exceeds the bridge's limit of %d bytes", c.t.max)}}, nil
					}
				}
			}
			c.t.log.Warn("mcp server message over the bridge's limit skipped", "limit_bytes", c.t.max)
			continue
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		msg, err := jsonrpc.DecodeMessage(line)
		if err != nil {
			c.t.stats.skipped.Add(1)
			// The line itself is in the container's logs; it is not
			// repeated here (a server may print anything, secrets too).
			c.t.log.Warn("mcp server wrote a line that is not a JSON-RPC message to stdout; skipped", "bytes", len(line))
			continue
		}
		c.t.stats.msgsIn.Add(1)
		c.t.stats.bytesIn.Add(uint64(len(line)))
		if c.t.intercept != nil && c.t.intercept(msg) {
			continue
		}
		if res, ok := msg.(*jsonrpc.Response); ok {
			c.mu.Lock()
			isInit := c.initID.IsValid() && res.ID == c.initID
			ver := c.initVer
			if isInit {
				c.initID = jsonrpc.ID{}
			}
			c.mu.Unlock()
			if isInit && res.Error != nil {
				// An already-initialized server (SDK servers refuse a
				// duplicate initialize): carry on as initialized.
				c.t.log.Info("mcp server was already initialized (agent restarted while it ran); features are probed by listing")
				if c.t.reinit != nil {
					c.t.reinit()
				}
				return &jsonrpc.Response{ID: res.ID, Result: reinitResult(ver)}, nil
			}
		}
		return msg, nil
	}
}

// readLine returns the next line; a line longer than max is consumed and
// its first 4 KiB returned as tooLong.
func (c *stdioConn) readLine() (line, tooLong []byte, err error) {
	var buf []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		if len(buf)+len(frag) > c.t.max {
			head := append(buf, frag...)
			if len(head) > 4096 {
				head = head[:4096]
			}
			head = bytes.Clone(head)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = c.r.ReadSlice('\n')
			}
			if err != nil {
				return nil, nil, err
			}
			return nil, head, nil
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			return buf, nil, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return buf, nil, nil
		default:
			return nil, nil, err
		}
	}
}

// Write sends msg to the server's stdin as one line.
func (c *stdioConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "initialize" {
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		_ = json.Unmarshal(req.Params, &p)
		c.mu.Lock()
		c.initID, c.initVer = req.ID, p.ProtocolVersion
		c.mu.Unlock()
	}
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	data = append(data, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.t.rwc.Write(data); err != nil {
		c.t.stats.errors.Add(1)
		return fmt.Errorf("write to the server's stdin: %w", err)
	}
	c.t.stats.msgsOut.Add(1)
	c.t.stats.bytesOut.Add(uint64(len(data)))
	return nil
}

// Close closes the attach connection (not the container's stdin).
func (c *stdioConn) Close() error {
	c.closeMu.Do(func() {
		close(c.closed)
		c.t.rwc.Close()
	})
	return nil
}

// SessionID implements mcp.Connection: stdio has none.
func (c *stdioConn) SessionID() string { return "" }

// reinitResult is the initialize answer the bridge assumes for a server
// that was initialized by an earlier bridge: every feature; what the
// server does not have answers its list with an error, taken as empty.
func reinitResult(version string) json.RawMessage {
	if version == "" {
		version = "2025-06-18"
	}
	b, _ := json.Marshal(map[string]any{
		"protocolVersion": version,
		"capabilities": map[string]any{
			"tools":       map[string]any{"listChanged": true},
			"prompts":     map[string]any{"listChanged": true},
			"resources":   map[string]any{"listChanged": true},
			"logging":     map[string]any{},
			"completions": map[string]any{},
		},
		"serverInfo": map[string]any{"name": "mcp-stdio-server", "version": "unknown"},
	})
	return b
}
