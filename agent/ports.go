package agent

import (
	"fmt"
	"net"
	"strconv"

	"github.com/agentopia/dtma"
)

// probePortFree reports whether the host port can be bound right now on
// hostIP ("" = all interfaces). It binds and releases at once. SCTP is not
// probed.
func probePortFree(hostIP string, port int, proto string) bool {
	addr := net.JoinHostPort(hostIP, strconv.Itoa(port))
	switch proto {
	case "tcp":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
	case "udp":
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// portHolder returns the instance (other than exceptID) whose resolved ports
// include hostPort/proto, or nil. Overlapping host IPs are not analysed: one
// host port per protocol belongs to one instance.
func portHolder(view []*dtma.Instance, exceptID string, hostPort int, proto string) *dtma.Instance {
	for _, inst := range view {
		if inst.ID == exceptID {
			continue
		}
		for _, p := range inst.Ports {
			if p.HostPort == hostPort && p.Protocol == proto {
				return inst
			}
		}
		if inst.Spec.MCP.BridgePort == hostPort && proto == "tcp" {
			return inst // its stdio bridge's port
		}
	}
	return nil
}

// portRemap records a requested host port that a deploy with
// PortConflictRemap published elsewhere, and why.
type portRemap struct {
	Field         string // ports[i].host_port
	Requested, To int
	Protocol      string
	Reason        string // "is the DTMA agent's own port", ...
}

// resolvePorts checks each requested port and allocates those with host
// port 0. A fixed host port that cannot be had — the agent's own port,
// another instance's, or one bound on the host — is an ECONFLICT error
// naming the field, unless policy is PortConflictRemap: then it is
// allocated from the range like a port 0, and the remap is returned so the
// caller can say why. It returns the resolved bindings, or an
// ECONFLICT/EINVALID error naming the field. The caller holds createMu, so
// allocations of concurrent deploys do not collide.
func (a *Agent) resolvePorts(view []*dtma.Instance, exceptID string, ports []dtma.Port, policy dtma.PortConflictPolicy) ([]dtma.Port, []portRemap, error) {
	out := make([]dtma.Port, 0, len(ports))
	var remaps []portRemap
	taken := map[string]bool{} // host ports requested or allocated in this request
	for _, p := range ports {
		if p.HostPort != 0 {
			taken[strconv.Itoa(p.HostPort)+"/"+p.Protocol] = true
		}
	}
	for i, p := range ports {
		field := fmt.Sprintf("ports[%d].host_port", i)
		if p.HostIP == "" {
			p.HostIP = a.cfg.DefaultHostIP // record where it is really published
		}
		ip := p.HostIP
		if p.HostPort != 0 {
			why := a.portUnavailable(view, exceptID, ip, p.HostPort, p.Protocol)
			if why == "" {
				out = append(out, p)
				continue
			}
			if policy != dtma.PortConflictRemap {
				return nil, nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "host port %d/%s %s", p.HostPort, p.Protocol, why)
			}
			remaps = append(remaps, portRemap{Field: field, Requested: p.HostPort, Protocol: p.Protocol, Reason: why})
			p.HostPort = 0
		}
		found := false
		for port := a.cfg.PortRangeStart; port <= a.cfg.PortRangeEnd; port++ {
			key := strconv.Itoa(port) + "/" + p.Protocol
			if taken[key] || a.portUnavailable(view, exceptID, ip, port, p.Protocol) != "" {
				continue
			}
			taken[key] = true
			p.HostPort = port
			found = true
			break
		}
		if !found {
			return nil, nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "no free host port left in %d-%d", a.cfg.PortRangeStart, a.cfg.PortRangeEnd)
		}
		if n := len(remaps); n > 0 && remaps[n-1].Field == field {
			remaps[n-1].To = p.HostPort
		}
		out = append(out, p)
	}
	// A fixed port may equal one allocated for an earlier entry.
	seen := map[string]int{}
	for i, p := range out {
		hk := strconv.Itoa(p.HostPort) + "/" + p.Protocol
		if j, dup := seen[hk]; dup {
			return nil, nil, dtma.FieldErrorf(dtma.ECONFLICT, fmt.Sprintf("ports[%d].host_port", i), "host port %s is also used by ports[%d]", hk, j)
		}
		seen[hk] = i
	}
	return out, remaps, nil
}

// portUnavailable says why hostPort/proto cannot be published for an
// instance ("" when it can): it is the agent's own port, another instance
// of this host holds it, or something on the host binds it.
func (a *Agent) portUnavailable(view []*dtma.Instance, exceptID, hostIP string, hostPort int, proto string) string {
	if proto == "tcp" && a.cfg.ListenPort != 0 && hostPort == a.cfg.ListenPort {
		return "is the DTMA agent's own port"
	}
	if h := portHolder(view, exceptID, hostPort, proto); h != nil {
		return fmt.Sprintf("is already used by instance %q", h.Name)
	}
	if !a.cfg.PortFree(hostIP, hostPort, proto) {
		return "is already in use on the host"
	}
	return ""
}
