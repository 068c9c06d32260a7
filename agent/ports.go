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
	}
	return nil
}

// resolvePorts checks each requested port and allocates those with host
// port 0. It returns the resolved bindings or an ECONFLICT/EINVALID error
// naming the field. The caller holds createMu, so allocations of concurrent
// deploys do not collide.
func (a *Agent) resolvePorts(view []*dtma.Instance, exceptID string, ports []dtma.Port) ([]dtma.Port, error) {
	out := make([]dtma.Port, 0, len(ports))
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
			if p.Protocol == "tcp" && a.cfg.ListenPort != 0 && p.HostPort == a.cfg.ListenPort {
				return nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "host port %d is the DTMA agent's own port", p.HostPort)
			}
			if h := portHolder(view, exceptID, p.HostPort, p.Protocol); h != nil {
				return nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "host port %d/%s is already used by instance %q", p.HostPort, p.Protocol, h.Name)
			}
			if !a.cfg.PortFree(ip, p.HostPort, p.Protocol) {
				return nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "host port %d/%s is already in use on the host", p.HostPort, p.Protocol)
			}
			out = append(out, p)
			continue
		}
		found := false
		for port := a.cfg.PortRangeStart; port <= a.cfg.PortRangeEnd; port++ {
			key := strconv.Itoa(port) + "/" + p.Protocol
			if taken[key] || (p.Protocol == "tcp" && port == a.cfg.ListenPort) || portHolder(view, exceptID, port, p.Protocol) != nil || !a.cfg.PortFree(ip, port, p.Protocol) {
				continue
			}
			taken[key] = true
			p.HostPort = port
			found = true
			break
		}
		if !found {
			return nil, dtma.FieldErrorf(dtma.ECONFLICT, field, "no free host port left in %d-%d", a.cfg.PortRangeStart, a.cfg.PortRangeEnd)
		}
		out = append(out, p)
	}
	// A fixed port may equal one allocated for an earlier entry.
	seen := map[string]int{}
	for i, p := range out {
		hk := strconv.Itoa(p.HostPort) + "/" + p.Protocol
		if j, dup := seen[hk]; dup {
			return nil, dtma.FieldErrorf(dtma.ECONFLICT, fmt.Sprintf("ports[%d].host_port", i), "host port %s is also used by ports[%d]", hk, j)
		}
		seen[hk] = i
	}
	return out, nil
}
