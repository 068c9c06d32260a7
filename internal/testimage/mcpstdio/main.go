// Command mcpstdio is the stdio MCP test server of DTMA's tests: a small
// server on the official Go SDK's stdio transport, built into a FROM
// scratch image by dockertest.MCPStdioImage.
//
// Tools: echo {text} answers text (and the call's progress token, so a test
// can tell answers apart); sleep {ms} sleeps (cancellable); progress {steps}
// sends steps progress notifications for the call's token, then answers;
// notify {text} sends a log message at info and adds a tool (a
// tools/list_changed notification); garbage {text} writes a non-JSON line
// to stdout and a line to stderr, then answers; big {bytes} answers a text
// of that many bytes; exit {code} exits the process at once (no answer);
// sample {text} asks the client to sample text and answers what it got.
// A resource fixture://hello, a prompt greet {name} with completions for
// name. Env MCPSTDIO_GARBAGE=1 writes a non-JSON line at start.
package main

//lint:file-ignore SA1019 logging and sampling are deprecated only in the sessionless 2026-07-28 revision; the bridge speaks the session revisions, where MCP stdio servers use them, and the issue asks for them to be forwarded

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type echoIn struct {
	Text string `json:"text"`
}

type sleepIn struct {
	MS int `json:"ms"`
}

type stepsIn struct {
	Steps int `json:"steps"`
}

type bigIn struct {
	Bytes int `json:"bytes"`
}

type exitIn struct {
	Code int `json:"code"`
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func main() {
	log.SetOutput(os.Stderr)
	if os.Getenv("MCPSTDIO_GARBAGE") == "1" {
		fmt.Fprintln(os.Stdout, "this is not JSON: starting up")
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "mcpstdio", Version: "1.0.0"}, &mcp.ServerOptions{
		CompletionHandler: func(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			var vals []string
			for _, v := range []string{"alice", "albert", "bob"} {
				if strings.HasPrefix(v, req.Params.Argument.Value) {
					vals = append(vals, v)
				}
			}
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: vals, Total: len(vals)}}, nil
		},
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "answers text"}, func(_ context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		tok := ""
		if t := req.Params.GetProgressToken(); t != nil {
			tok = fmt.Sprint(t)
		}
		r := text(in.Text)
		r.StructuredContent = map[string]any{"text": in.Text, "progress_token": tok}
		return r, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "sleep", Description: "sleeps ms milliseconds"}, func(ctx context.Context, _ *mcp.CallToolRequest, in sleepIn) (*mcp.CallToolResult, any, error) {
		select {
		case <-time.After(time.Duration(in.MS) * time.Millisecond):
			return text("slept"), nil, nil
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "progress", Description: "sends progress notifications"}, func(ctx context.Context, req *mcp.CallToolRequest, in stepsIn) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; tok != nil && i <= in.Steps; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: tok, Progress: float64(i), Total: float64(in.Steps), Message: fmt.Sprintf("step %d of %s", i, fmt.Sprint(tok)),
			}); err != nil {
				return nil, nil, err
			}
		}
		return text(fmt.Sprintf("done %d", in.Steps)), nil, nil
	})
	var extra atomic.Int64
	mcp.AddTool(srv, &mcp.Tool{Name: "notify", Description: "logs and changes the tool list"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Logger: "mcpstdio", Data: in.Text})
		n := extra.Add(1)
		mcp.AddTool(srv, &mcp.Tool{Name: fmt.Sprintf("extra%d", n)}, func(context.Context, *mcp.CallToolRequest, echoIn) (*mcp.CallToolResult, any, error) {
			return text("extra"), nil, nil
		})
		return text("notified"), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "garbage", Description: "writes non-JSON to stdout"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		fmt.Fprintln(os.Stdout, "garbage: "+in.Text)
		fmt.Fprintln(os.Stderr, "stderr: "+in.Text)
		return text("garbage written"), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "big", Description: "answers bytes bytes"}, func(_ context.Context, _ *mcp.CallToolRequest, in bigIn) (*mcp.CallToolResult, any, error) {
		return text(strings.Repeat("x", in.Bytes)), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "exit", Description: "exits the process"}, func(_ context.Context, _ *mcp.CallToolRequest, in exitIn) (*mcp.CallToolResult, any, error) {
		fmt.Fprintln(os.Stderr, "exiting on request")
		os.Exit(in.Code)
		return nil, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "sample", Description: "asks the client to sample (sampling/createMessage)"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10,
			Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Text}}}})
		if err != nil {
			r := text("sampling refused: " + err.Error())
			r.IsError = true
			return r, nil, nil
		}
		t, _ := res.Content.(*mcp.TextContent)
		if t == nil {
			return text("sampled: (not text)"), nil, nil
		}
		return text("sampled: " + t.Text), nil, nil
	})
	srv.AddResource(&mcp.Resource{URI: "fixture://hello", Name: "hello", MIMEType: "text/plain"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "fixture://hello", MIMEType: "text/plain", Text: "hello"}}}, nil
	})
	srv.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "name", Required: true}}}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello " + req.Params.Arguments["name"]}}}}, nil
	})
	if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Printf("server ended: %v", err)
	}
}
