package http

import (
	"net/http"

	"github.com/agentopia/dtma"
)

// Ready is GET /ready's answer.
type Ready struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"` // why not, when not
}

// readiness reports whether the agent can do its job: the registry
// answers (the service pings it), Docker answers, and the first full
// reconcile since start-up has finished (LastObservedAt set). The reason
// names the first unmet condition.
func readiness(h dtma.Health) (bool, string) {
	switch {
	case !h.RegistryOK:
		return false, "registry unavailable: " + h.RegistryError
	case !h.DockerOK:
		return false, "docker unavailable: " + h.DockerError
	case h.LastObservedAt.IsZero():
		return false, "the first full reconcile has not finished"
	}
	return true, ""
}

// handleReady serves GET /ready (public, like /health, for load balancers
// and orchestrators): 200 {"ready":true} when ready, else 503 with the
// reason. Unlike /health (the process answers) it says whether a
// lifecycle call can be served and reads are current.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ok, reason := readiness(s.Service.Health(r.Context()))
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, Ready{Reason: reason})
		return
	}
	writeJSON(w, http.StatusOK, Ready{Ready: true})
}
