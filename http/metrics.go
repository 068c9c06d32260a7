package http

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpMetrics are the server's own series: requests by method, route and
// status, and their latency. Label values come from methodLabel,
// routeLabel and the status codes the server answers with, so their number
// is bounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	gatherer prometheus.Gatherer
}

// newHTTPMetrics registers the server's series, and a collector of the
// service's state (instances, dependencies, readiness), on reg; a nil reg
// gets a private registry (tests, or a server without Prometheus).
func (s *Server) newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtma_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dtma_http_request_duration_seconds",
			Help:    "HTTP request latency by method and route pattern.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		gatherer: reg,
	}
	// A second Handler() on the same registry (tests) reuses the series.
	m.requests = registerOr(reg, m.requests)
	m.duration = registerOr(reg, m.duration)
	registerOr[prometheus.Collector](reg, &stateCollector{s: s})
	return m
}

// registerOr registers c, or returns the collector already registered
// under the same descriptors.
func registerOr[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err) // a programming error: two different series with one name
	}
	return c
}

func (m *httpMetrics) observe(method, route string, code int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(method, route).Observe(d.Seconds())
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

// handleMetrics serves the Prometheus exposition of the registry the
// server was given (Server.Prometheus): its own series, the service's
// state, and whatever else the agent registered there (Docker and registry
// latencies, probes, heartbeat, Go runtime and process).
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.metrics.gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
}

// stateCollector reads the service's instances and health at scrape
// time: instances by dtma_status, docker_status and health, drift,
// dependencies, the last full observation, readiness, build info.
type stateCollector struct{ s *Server }

var (
	descBuild     = prometheus.NewDesc("dtma_build_info", "The agent's version and host id.", []string{"version", "host_id"}, nil)
	descDockerUp  = prometheus.NewDesc("dtma_docker_up", "Whether the Docker daemon answers.", nil, nil)
	descRegUp     = prometheus.NewDesc("dtma_registry_up", "Whether the registry answers.", nil, nil)
	descLastObs   = prometheus.NewDesc("dtma_last_observed_timestamp_seconds", "When the reconciler last listed Docker in full (0: never).", nil, nil)
	descInstances = prometheus.NewDesc("dtma_instances", "Managed instances by dtma_status, docker_status and health (none: no check or not known).", []string{"dtma_status", "docker_status", "health"}, nil)
	descByStatus  = prometheus.NewDesc("dtma_instances_by_status", "Managed instances by dtma_status (every status, 0 included).", []string{"dtma_status"}, nil)
	descDrift     = prometheus.NewDesc("dtma_instances_drift", "Instances whose container disagrees with the desired state.", nil, nil)
	descReady     = prometheus.NewDesc("dtma_ready", "Whether GET /ready answers 200.", nil, nil)
)

var allStatuses = []dtma.Status{dtma.StatusDeploying, dtma.StatusStarting, dtma.StatusStopping, dtma.StatusRestarting,
	dtma.StatusRemoving, dtma.StatusRunning, dtma.StatusStopped, dtma.StatusMissing, dtma.StatusCrashLoop, dtma.StatusError}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{descBuild, descDockerUp, descRegUp, descLastObs, descInstances, descByStatus, descDrift, descReady}, bridgeDescs...) {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := c.s
	h := s.Service.Health(ctx)
	b01 := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, s.Version, h.HostID)
	ch <- prometheus.MustNewConstMetric(descDockerUp, prometheus.GaugeValue, b01(h.DockerOK))
	ch <- prometheus.MustNewConstMetric(descRegUp, prometheus.GaugeValue, b01(h.RegistryOK))
	var last float64
	if !h.LastObservedAt.IsZero() {
		last = float64(h.LastObservedAt.UnixNano()) / float64(time.Second)
	}
	ch <- prometheus.MustNewConstMetric(descLastObs, prometheus.GaugeValue, last)
	ready, _ := readiness(h)
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b01(ready))

	list, err := s.Service.ListInstances(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descInstances, err)
		return
	}
	byStatus := map[dtma.Status]int{}
	for _, st := range allStatuses {
		byStatus[st] = 0
	}
	type key struct{ status, docker, health string }
	byKey := map[key]int{}
	drift := 0
	for _, inst := range list {
		byStatus[inst.Status]++
		docker := string(inst.DockerStatus)
		if docker == "" {
			docker = "unknown"
		}
		health := string(inst.Health.State)
		if health == "" {
			health = "none"
		}
		byKey[key{string(inst.Status), docker, health}]++
		if inst.Drift() {
			drift++
		}
	}
	for st, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(descByStatus, prometheus.GaugeValue, float64(n), string(st))
	}
	for k, n := range byKey {
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(n), k.status, k.docker, k.health)
	}
	ch <- prometheus.MustNewConstMetric(descDrift, prometheus.GaugeValue, float64(drift))
	s.collectBridges(ch, list)
}
