package mcpbridge_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/mcpbridge"
)

// TestHost: Ensure serves an instance's bridge on its port (twice is a
// no-op), Status reports it, Stop closes the port.
func TestHost(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := mcpbridge.NewHost(ctx, f.rt, mcpbridge.Config{})
	defer h.Close()
	port := dockertest.FreePort(t)
	target := dtma.MCPBridgeTarget{InstanceID: "i1", Name: "one", ContainerID: f.id, HostIP: "127.0.0.1", Port: port}
	for range 2 {
		if err := h.Ensure(ctx, target); err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	waitFor(t, "attach", func() bool { s, ok := h.Status("i1"); return ok && s.Attached })
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	cs := connect(t, url, nil, nil)
	if got := callText(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "via host"}}); got != "via host" {
		t.Errorf("echo: %q", got)
	}
	s, _ := h.Status("i1")
	if s.Port != port || s.Sessions != 1 || s.Attaches != 1 || s.MessagesIn == 0 {
		t.Errorf("status %+v", s)
	}
	h.Stop("i1")
	if _, ok := h.Status("i1"); ok {
		t.Errorf("status after Stop")
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Errorf("the bridge's port still accepts after Stop")
	}
}
