package http

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// requestCounter counts answered requests by method, route and status, for
// GET /metrics. Its keys come from methodLabel, routeLabel and the status
// codes the server answers with, so their number is bounded.
type requestCounter struct {
	mu     sync.Mutex
	counts map[[3]string]uint64 // method, route, code
}

func (c *requestCounter) add(method, route string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[[3]string]uint64{}
	}
	c.counts[[3]string{method, route, fmt.Sprint(code)}]++
}

// methodLabel is the metrics label for a request method: the method when
// it is a standard one (GET HEAD POST PUT PATCH DELETE OPTIONS), else
// "other".
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
		return m
	}
	return "other"
}

// routeLabel is the route a request was served by, as the metrics label
// it: the registered path pattern (so instance names never become
// labels), or "unmatched" for anything no route took (404, 405, the mux's
// redirects).
func (s *Server) routeLabel(r *http.Request) string {
	if !s.patterns[r.Pattern] {
		return "unmatched"
	}
	_, path, _ := strings.Cut(r.Pattern, " ")
	return path
}

// handleMetrics serves the Prometheus text exposition format (version
// 0.0.4): instance counts by status, drift, Docker and registry health, the
// last full observation, and HTTP requests by route and status.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListInstances(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := s.Service.Health(r.Context())
	var b strings.Builder
	gauge := func(name, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
	}
	bool01 := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	gauge("dtma_build_info", "The agent's version and host id.")
	fmt.Fprintf(&b, "dtma_build_info{version=%q,host_id=%q} 1\n", s.Version, h.HostID)
	gauge("dtma_docker_up", "Whether the Docker daemon answers.")
	fmt.Fprintf(&b, "dtma_docker_up %d\n", bool01(h.DockerOK))
	gauge("dtma_registry_up", "Whether the registry answers.")
	fmt.Fprintf(&b, "dtma_registry_up %d\n", bool01(h.RegistryOK))
	gauge("dtma_last_observed_timestamp_seconds", "When the reconciler last listed Docker in full (0: never).")
	var last float64
	if !h.LastObservedAt.IsZero() {
		last = float64(h.LastObservedAt.UnixNano()) / float64(time.Second)
	}
	fmt.Fprintf(&b, "dtma_last_observed_timestamp_seconds %.3f\n", last)

	byStatus := map[dtma.Status]int{}
	for _, st := range []dtma.Status{dtma.StatusDeploying, dtma.StatusStarting, dtma.StatusStopping, dtma.StatusRestarting,
		dtma.StatusRemoving, dtma.StatusRunning, dtma.StatusStopped, dtma.StatusMissing, dtma.StatusCrashLoop, dtma.StatusError} {
		byStatus[st] = 0
	}
	drift := 0
	for _, inst := range list {
		byStatus[inst.Status]++
		if inst.Drift() {
			drift++
		}
	}
	gauge("dtma_instances", "Managed instances by dtma_status.")
	statuses := make([]string, 0, len(byStatus))
	for st := range byStatus {
		statuses = append(statuses, string(st))
	}
	sort.Strings(statuses)
	for _, st := range statuses {
		fmt.Fprintf(&b, "dtma_instances{dtma_status=%q} %d\n", st, byStatus[dtma.Status(st)])
	}
	gauge("dtma_instances_drift", "Instances whose container disagrees with the desired state.")
	fmt.Fprintf(&b, "dtma_instances_drift %d\n", drift)

	b.WriteString(s.mcpBridgeMetrics(list))

	fmt.Fprintf(&b, "# HELP dtma_http_requests_total HTTP requests answered, by method, route and status.\n# TYPE dtma_http_requests_total counter\n")
	s.requests.mu.Lock()
	keys := make([][3]string, 0, len(s.requests.counts))
	for k := range s.requests.counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Join(keys[i][:], " ") < strings.Join(keys[j][:], " ") })
	for _, k := range keys {
		fmt.Fprintf(&b, "dtma_http_requests_total{method=%q,route=%q,code=%q} %d\n", k[0], k[1], k[2], s.requests.counts[k])
	}
	s.requests.mu.Unlock()

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
}
