package http

import (
	"fmt"
	"strings"

	"github.com/agentopia/dtma"
)

// mcpBridgeMetrics returns the Prometheus lines of the stdio instances'
// bridges (sessions, messages, bytes, errors per instance), "" when the
// service runs none.
func (s *Server) mcpBridgeMetrics(list []*dtma.Instance) string {
	rep, ok := s.Service.(dtma.MCPBridgeReporter)
	if !ok {
		return ""
	}
	type row struct {
		inst *dtma.Instance
		st   dtma.MCPBridgeStatus
	}
	var rows []row
	for _, inst := range list {
		if !inst.Spec.MCP.IsStdio() {
			continue
		}
		st, _ := rep.BridgeStatus(inst.ID) // none running: zeros, up 0
		rows = append(rows, row{inst, st})
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	metric := func(name, kind, help string, value func(row) string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
		for _, r := range rows {
			fmt.Fprintf(&b, "%s{instance_id=%q,instance=%q%s\n", name, r.inst.ID, r.inst.Name, value(r))
		}
	}
	num := func(v uint64) string { return fmt.Sprintf("} %d", v) }
	metric("dtma_mcp_bridge_up", "gauge", "1 when the stdio instance's bridge is attached to its server.", func(r row) string {
		if r.st.Attached {
			return num(1)
		}
		return num(0)
	})
	metric("dtma_mcp_bridge_sessions", "gauge", "Open MCP HTTP sessions of the bridge.", func(r row) string { return num(uint64(r.st.Sessions)) })
	metric("dtma_mcp_bridge_attaches_total", "counter", "Attaches to the server's stdio (re-attaches after restarts included).", func(r row) string { return num(r.st.Attaches) })
	fmt.Fprintf(&b, "# HELP dtma_mcp_bridge_messages_total MCP messages between the bridge and the server, by direction.\n# TYPE dtma_mcp_bridge_messages_total counter\n")
	fmt.Fprintf(&b, "# HELP dtma_mcp_bridge_bytes_total Bytes between the bridge and the server, by direction.\n# TYPE dtma_mcp_bridge_bytes_total counter\n")
	for _, r := range rows {
		for _, d := range []struct {
			dir       string
			msgs, byt uint64
		}{{"from_server", r.st.MessagesIn, r.st.BytesIn}, {"to_server", r.st.MessagesOut, r.st.BytesOut}} {
			fmt.Fprintf(&b, "dtma_mcp_bridge_messages_total{instance_id=%q,instance=%q,direction=%q} %d\n", r.inst.ID, r.inst.Name, d.dir, d.msgs)
			fmt.Fprintf(&b, "dtma_mcp_bridge_bytes_total{instance_id=%q,instance=%q,direction=%q} %d\n", r.inst.ID, r.inst.Name, d.dir, d.byt)
		}
	}
	metric("dtma_mcp_bridge_errors_total", "counter", "Oversized messages, failed writes and failed attaches.", func(r row) string { return num(r.st.Errors) })
	metric("dtma_mcp_bridge_skipped_lines_total", "counter", "Non-JSON lines the server printed on stdout (skipped).", func(r row) string { return num(r.st.SkippedLines) })
	return b.String()
}
