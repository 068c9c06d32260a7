package dockertest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// MCPStdioImageRepo is the repository of the stdio MCP fixture image; the
// tag is the first 12 hex digits of the SHA-256 of its binary.
const MCPStdioImageRepo = "dtma-test-mcpstdio"

// mcpStdioImage memoizes MCPStdioImage within this process (like
// echoImage: written once under its sync.Once).
var mcpStdioImage struct {
	once sync.Once
	tag  string
	err  error
}

// MCPStdioImage returns the tag ("dtma-test-mcpstdio:<12 hex>") of a FROM
// scratch image running the stdio MCP server of
// internal/testimage/mcpstdio (ENTRYPOINT /mcpstdio), built and shared
// exactly as EchoImage's. The image is labelled dtma.test=1.
func MCPStdioImage(tb testing.TB) string {
	tb.Helper()
	c := Client(tb)
	mcpStdioImage.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		mcpStdioImage.tag, mcpStdioImage.err = buildImage(ctx, c, "mcpstdio", MCPStdioImageRepo)
	})
	if mcpStdioImage.err != nil {
		tb.Fatalf("mcpstdio test image: %v", mcpStdioImage.err)
	}
	return mcpStdioImage.tag
}
