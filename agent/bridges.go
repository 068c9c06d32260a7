package agent

// The stdio instances' MCP bridges follow the rows: a bridge serves while
// its instance's container runs, attaches again when the container was
// restarted or recreated, and stops when it stops or is removed.

import (
	"context"
	"strconv"
	"time"

	"github.com/agentopia/dtma"
)

// allocBridgePort returns a free host port from the range for a stdio
// instance's bridge, not among ports (the instance's own) nor held by
// another instance or anything on the host. ECONFLICT on mcp when the
// range is exhausted. Caller holds createMu.
func (a *Agent) allocBridgePort(view []*dtma.Instance, ports []dtma.Port) (int, error) {
	own := map[int]bool{}
	for _, p := range ports {
		if p.Protocol == "tcp" {
			own[p.HostPort] = true
		}
	}
	for port := a.cfg.PortRangeStart; port <= a.cfg.PortRangeEnd; port++ {
		if own[port] || a.portUnavailable(view, "", a.cfg.DefaultHostIP, port, "tcp") != "" {
			continue
		}
		return port, nil
	}
	return 0, dtma.FieldErrorf(dtma.ECONFLICT, "mcp", "no free host port left in %d-%d for the stdio bridge", a.cfg.PortRangeStart, a.cfg.PortRangeEnd)
}

// kickBridges asks runBridges to look at the rows again (never blocks).
func (a *Agent) kickBridges() {
	select {
	case a.bridgeKick <- struct{}{}:
	default:
	}
}

// BridgeStatus returns the state of a stdio instance's bridge (for health
// and metrics); ok is false when it has none running.
func (a *Agent) BridgeStatus(instanceID string) (dtma.MCPBridgeStatus, bool) {
	if a.cfg.Bridges == nil {
		return dtma.MCPBridgeStatus{}, false
	}
	return a.cfg.Bridges.Status(instanceID)
}

// bridgeKey is what a running bridge was last ensured for: a change
// (another container, a restart, another port or token) ensures it again.
type bridgeKey struct {
	target  dtma.MCPBridgeTarget
	started time.Time
}

// runBridges keeps the bridges in step with the rows until ctx ends: on
// every row change and at least every second. It stops every bridge when
// it returns.
func (a *Agent) runBridges(ctx context.Context) {
	if a.cfg.Bridges == nil {
		return
	}
	active := map[string]bridgeKey{}
	failed := map[string]string{} // instance id -> last error logged
	defer func() {
		for id := range active {
			a.cfg.Bridges.Stop(id)
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		a.syncBridges(ctx, active, failed)
		select {
		case <-ctx.Done():
			return
		case <-a.bridgeKick:
		case <-tick.C:
		}
	}
}

// syncBridges ensures a bridge for every stdio instance whose container
// runs (and no operation removes or stops), and stops the others.
// A failure to ensure one is logged once per distinct error (failed may be
// nil) and retried at the next sync.
func (a *Agent) syncBridges(ctx context.Context, active map[string]bridgeKey, failed map[string]string) {
	seen := map[string]bool{}
	for _, inst := range a.view.shared() { // read only
		m := inst.Spec.MCP
		if !m.IsStdio() || m.BridgePort == 0 || inst.ContainerID == "" || inst.DockerStatus != dtma.DockerRunning ||
			inst.PendingOp == dtma.OpRemove || inst.PendingOp == dtma.OpStop {
			continue
		}
		seen[inst.ID] = true
		key := bridgeKey{
			target: dtma.MCPBridgeTarget{InstanceID: inst.ID, Name: inst.Name, ContainerID: inst.ContainerID,
				HostIP: a.cfg.DefaultHostIP, Port: m.BridgePort, TokenHash: m.TokenHash},
			started: inst.StartedAt,
		}
		if cur, ok := active[inst.ID]; ok && cur == key {
			continue
		}
		if err := a.cfg.Bridges.Ensure(ctx, key.target); err != nil {
			if failed == nil || failed[inst.ID] != err.Error() {
				a.log.Warn("mcp bridge not started; retrying", "instance", inst.Name, "port", strconv.Itoa(m.BridgePort), "err", err)
			}
			if failed != nil {
				failed[inst.ID] = err.Error()
			}
			continue
		}
		delete(failed, inst.ID)
		active[inst.ID] = key
	}
	for id := range active {
		if !seen[id] {
			a.cfg.Bridges.Stop(id)
			delete(active, id)
		}
	}
}
