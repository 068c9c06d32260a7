package http

import (
	"net"
	"net/http"
	"net/netip"

	"github.com/agentopia/dtma"
)

// AdoptPolicy says who may call POST /v1/adopt, the route that brings a
// container DTMA did not create under management (and copies its
// environment into the registry). A bearer token alone is not enough on a
// public address: adoption is an operator's act, done on the host with
// `dtma migrate`, which talks to the agent over 127.0.0.1.
type AdoptPolicy string

const (
	// AdoptLoopback (the default, also for "") serves the route only to
	// peers connecting from a loopback address. Behind a reverse proxy on
	// the same host every peer is loopback: use AdoptOff there.
	AdoptLoopback AdoptPolicy = "loopback"
	// AdoptOff refuses the route to everyone.
	AdoptOff AdoptPolicy = "off"
	// AdoptAny serves it to every authenticated caller.
	AdoptAny AdoptPolicy = "any"
)

// adoptAllowed returns nil when r may adopt under the policy, else an
// EFORBIDDEN error saying how to enable it.
func (s *Server) adoptAllowed(r *http.Request) error {
	switch s.Adopt {
	case AdoptAny:
		return nil
	case AdoptOff:
		return dtma.Errorf(dtma.EFORBIDDEN, "adoption is disabled on this agent (DTMA_ADOPT=off); set DTMA_ADOPT=loopback and run dtma migrate on the host")
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
			return nil
		}
	}
	return dtma.Errorf(dtma.EFORBIDDEN, "adoption is only served to loopback peers (DTMA_ADOPT=loopback): run dtma migrate on the agent's host against http://127.0.0.1, or set DTMA_ADOPT=any")
}
