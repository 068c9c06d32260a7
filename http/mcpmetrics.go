package http

import (
	"github.com/agentopia/dtma"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descBridgeUp       = prometheus.NewDesc("dtma_mcp_bridge_up", "1 when the stdio instance's bridge is attached to its server.", []string{"instance_id", "instance"}, nil)
	descBridgeSessions = prometheus.NewDesc("dtma_mcp_bridge_sessions", "Open MCP HTTP sessions of the bridge.", []string{"instance_id", "instance"}, nil)
	descBridgeAttaches = prometheus.NewDesc("dtma_mcp_bridge_attaches_total", "Attaches to the server's stdio (re-attaches after restarts included).", []string{"instance_id", "instance"}, nil)
	descBridgeMessages = prometheus.NewDesc("dtma_mcp_bridge_messages_total", "MCP messages between the bridge and the server, by direction.", []string{"instance_id", "instance", "direction"}, nil)
	descBridgeBytes    = prometheus.NewDesc("dtma_mcp_bridge_bytes_total", "Bytes between the bridge and the server, by direction.", []string{"instance_id", "instance", "direction"}, nil)
	descBridgeErrors   = prometheus.NewDesc("dtma_mcp_bridge_errors_total", "Oversized messages, failed writes and failed attaches.", []string{"instance_id", "instance"}, nil)
	descBridgeSkipped  = prometheus.NewDesc("dtma_mcp_bridge_skipped_lines_total", "Non-JSON lines the server printed on stdout (skipped).", []string{"instance_id", "instance"}, nil)
)

var bridgeDescs = []*prometheus.Desc{descBridgeUp, descBridgeSessions, descBridgeAttaches, descBridgeMessages, descBridgeBytes, descBridgeErrors, descBridgeSkipped}

// collectBridges sends the stdio instances' bridge series (when the
// service reports bridges): one set per stdio instance, labelled with its
// id and name.
func (s *Server) collectBridges(ch chan<- prometheus.Metric, list []*dtma.Instance) {
	rep, ok := s.Service.(dtma.MCPBridgeReporter)
	if !ok {
		return
	}
	for _, inst := range list {
		if !inst.Spec.MCP.IsStdio() {
			continue
		}
		st, _ := rep.BridgeStatus(inst.ID) // none running: zeros, up 0
		id, name := inst.ID, inst.Name
		up := 0.0
		if st.Attached {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBridgeUp, prometheus.GaugeValue, up, id, name)
		ch <- prometheus.MustNewConstMetric(descBridgeSessions, prometheus.GaugeValue, float64(st.Sessions), id, name)
		ch <- prometheus.MustNewConstMetric(descBridgeAttaches, prometheus.CounterValue, float64(st.Attaches), id, name)
		for _, d := range []struct {
			dir       string
			msgs, byt uint64
		}{{"from_server", st.MessagesIn, st.BytesIn}, {"to_server", st.MessagesOut, st.BytesOut}} {
			ch <- prometheus.MustNewConstMetric(descBridgeMessages, prometheus.CounterValue, float64(d.msgs), id, name, d.dir)
			ch <- prometheus.MustNewConstMetric(descBridgeBytes, prometheus.CounterValue, float64(d.byt), id, name, d.dir)
		}
		ch <- prometheus.MustNewConstMetric(descBridgeErrors, prometheus.CounterValue, float64(st.Errors), id, name)
		ch <- prometheus.MustNewConstMetric(descBridgeSkipped, prometheus.CounterValue, float64(st.SkippedLines), id, name)
	}
}
