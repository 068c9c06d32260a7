package agent

import (
	"context"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
)

// fakeBridges records what the agent asks of its bridges.
type fakeBridges struct {
	mu      sync.Mutex
	running map[string]dtma.MCPBridgeTarget
	ensures int
}

func (f *fakeBridges) Ensure(_ context.Context, t dtma.MCPBridgeTarget) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[t.InstanceID] = t
	f.ensures++
	return nil
}

func (f *fakeBridges) Stop(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, id)
}

func (f *fakeBridges) Status(id string) (dtma.MCPBridgeStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.running[id]
	return dtma.MCPBridgeStatus{Port: t.Port}, ok
}

// TestStdioBridgeFollowsRows: a stdio deploy gets a bridge port from the
// range (not one of its own ports, not another instance's), a re-deploy of
// the same body is identical; the bridge runs while the container runs,
// is ensured again after a restart, and stops on stop and remove. An image
// matching StdioImages deploys as stdio unless the deploy says "none".
func TestStdioBridgeFollowsRows(t *testing.T) {
	b := newBed(t)
	fb := &fakeBridges{running: map[string]dtma.MCPBridgeTarget{}}
	b.cfg.Bridges = fb
	b.cfg.StdioImages = dtma.StdioImages{"never-matches/*"}
	a := b.open()
	active := map[string]bridgeKey{}

	spec := testSpec()
	spec.MCP = dtma.MCP{Transport: dtma.MCPStdio}
	spec.Ports = []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31000}}
	inst, created, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "stdio", Spec: spec})
	if err != nil || !created {
		t.Fatalf("deploy: %v", err)
	}
	bp := inst.Spec.MCP.BridgePort
	if bp < 31000 || bp > 31009 || bp == 31000 {
		t.Fatalf("bridge port %d: want one of the range other than the instance's own 31000", bp)
	}
	again, created, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "stdio", Spec: spec})
	if err != nil || created || again.Spec.MCP.BridgePort != bp {
		t.Fatalf("identical re-deploy: created %v, port %d, err %v", created, again.Spec.MCP.BridgePort, err)
	}
	other, _, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "other", Spec: dtma.Spec{Image: spec.Image, Ports: []dtma.Port{{ContainerPort: 80, Protocol: "tcp"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if other.Ports[0].HostPort == bp {
		t.Fatalf("another instance was given the bridge's port %d", bp)
	}

	a.syncBridges(b.ctx, active, nil)
	if got, ok := fb.running[inst.ID]; !ok || got.Port != bp || got.ContainerID != inst.ContainerID {
		t.Fatalf("bridge after deploy: %+v (running %v)", got, ok)
	}
	if _, ok := fb.running[other.ID]; ok {
		t.Fatalf("a bridge for a non-stdio instance")
	}
	n := fb.ensures
	a.syncBridges(b.ctx, active, nil)
	if fb.ensures != n {
		t.Fatalf("a bridge was ensured again with nothing changed")
	}
	if _, err := a.RestartInstance(b.ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	a.syncBridges(b.ctx, active, nil)
	if fb.ensures != n+1 {
		t.Fatalf("a restart did not ensure (re-attach) the bridge: %d ensures, want %d", fb.ensures, n+1)
	}
	if _, _, err := a.StopInstance(b.ctx, inst.ID, 0); err != nil {
		t.Fatal(err)
	}
	a.syncBridges(b.ctx, active, nil)
	if _, ok := fb.running[inst.ID]; ok {
		t.Fatalf("the bridge runs on after stop")
	}
	if _, _, err := a.StartInstance(b.ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	a.syncBridges(b.ctx, active, nil)
	if _, ok := fb.running[inst.ID]; !ok {
		t.Fatalf("no bridge after start")
	}
	if err := a.RemoveInstance(b.ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	a.syncBridges(b.ctx, active, nil)
	if len(fb.running) != 0 {
		t.Fatalf("bridges after remove: %v", fb.running)
	}

	b.cfg.StdioImages = dtma.StdioImages{spec.Image}
	a2 := b.open()
	byDefault, _, err := a2.Deploy(b.ctx, dtma.DeployRequest{Name: "legacy", Spec: dtma.Spec{Image: spec.Image}})
	if err != nil || !byDefault.Spec.MCP.IsStdio() || byDefault.Spec.MCP.BridgePort == 0 {
		t.Fatalf("a deploy of a DTMA_STDIO_IMAGES image: %+v, %v", byDefault.Spec.MCP, err)
	}
	none, _, err := a2.Deploy(b.ctx, dtma.DeployRequest{Name: "none", Spec: dtma.Spec{Image: spec.Image, MCP: dtma.MCP{Transport: dtma.MCPNone}}})
	if err != nil || none.Spec.MCP.IsStdio() {
		t.Fatalf("an explicit none was overridden: %+v, %v", none.Spec.MCP, err)
	}
}

// TestStdioAdoptedFromLabels: a stdio instance's row rebuilt from its
// container's labels (registry lost) keeps its transport, bridge port and
// token hash, so the bridge comes back as it was, protected as it was.
func TestStdioAdoptedFromLabels(t *testing.T) {
	b := newBed(t)
	a := b.open()
	spec := testSpec()
	spec.MCP = dtma.MCP{Transport: dtma.MCPStdio, TokenHash: dtma.HashMCPToken("0123456789abcdef-token")}
	inst, _, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "stdio", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.reg.DeleteInstance(b.ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	b.open()
	b.relist()
	r := b.mustRow("stdio")
	if r.Spec.MCP != inst.Spec.MCP || r.SpecHash != inst.SpecHash {
		t.Fatalf("adopted mcp %+v (hash %s), want %+v (hash %s)", r.Spec.MCP, r.SpecHash, inst.Spec.MCP, inst.SpecHash)
	}
}
