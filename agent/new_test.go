package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// The host id has one source: the agent serves the registry's host and
// refuses a runtime scoped to another one, or a registry without a host.
func TestNewHostID(t *testing.T) {
	ctx := context.Background()
	a, err := New(ctx, Config{}, registrytest.NewMemory("h1"), runtimetest.New("h1"))
	if err != nil {
		t.Fatalf("same host: %v", err)
	}
	if h := a.Health(ctx); h.HostID != "h1" {
		t.Errorf("health host %q, want h1", h.HostID)
	}
	_, err = New(ctx, Config{}, registrytest.NewMemory("h1"), runtimetest.New("h2"))
	if dtma.ErrorCode(err) != dtma.EINVALID || !strings.Contains(err.Error(), `"h2"`) || !strings.Contains(err.Error(), `"h1"`) {
		t.Errorf("runtime of another host: %v, want EINVALID naming both hosts", err)
	}
	_, err = New(ctx, Config{}, registrytest.NewMemory(""), runtimetest.New(""))
	if dtma.ErrorCode(err) != dtma.EINVALID {
		t.Errorf("registry without a host: %v, want EINVALID", err)
	}
}
