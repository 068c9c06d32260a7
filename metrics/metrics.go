// Package metrics holds the agent's Prometheus series that are not the
// HTTP server's: Docker API and registry latency and errors (as decorators
// of dtma.Runtime and dtma.Registry), health probes, heartbeat sends, and
// the reconciler's counters, plus the Go runtime and process collectors.
// Every label value is from a fixed set (operation names, backends, check
// types, results), never from a request or an instance.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the agent's series, registered on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	dockerDuration   *prometheus.HistogramVec
	dockerErrors     *prometheus.CounterVec
	registryDuration *prometheus.HistogramVec
	registryErrors   *prometheus.CounterVec
	probes           *prometheus.CounterVec
	probeDuration    *prometheus.HistogramVec
	heartbeats       prometheus.Counter
	heartbeatFails   prometheus.Counter

	reconcileRuns     prometheus.Counter   // relists finished
	reconcileDuration prometheus.Histogram // their duration
	driftFound        prometheus.Gauge     // instances in drift after the last relist
	recreated         prometheus.Counter   // containers recreated from a stored spec
	adopted           prometheus.Counter   // labelled containers adopted
	removed           prometheus.Counter   // containers removed by the reconciler
	eventReconnects   prometheus.Counter   // Docker event stream resubscriptions after a break
	UnhealthyRestarts prometheus.Counter   // restarts by on_unhealthy: restart
	EventsDropped     prometheus.Counter   // SSE subscribers dropped for being slow
	EventsSubscribers prometheus.Gauge     // SSE subscribers connected
	ResyncInterval    prometheus.Gauge     // DTMA_RESYNC_INTERVAL in seconds (alerting reads it)
}

// latency buckets for calls that take from a millisecond to a minute.
var buckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New returns the agent's series on a fresh registry that also holds the
// Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		Registry: reg,
		dockerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dtma_docker_request_duration_seconds", Help: "Docker Engine API call latency by operation.", Buckets: buckets,
		}, []string{"operation"}),
		dockerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtma_docker_request_errors_total", Help: "Docker Engine API calls that failed, by operation and error code (unavailable, not_found, ...).",
		}, []string{"operation", "code"}),
		registryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dtma_registry_operation_duration_seconds", Help: "Registry operation latency by operation and backend.", Buckets: buckets,
		}, []string{"operation", "backend"}),
		registryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtma_registry_operation_errors_total", Help: "Registry operations that failed, by operation, backend and error code.",
		}, []string{"operation", "backend", "code"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtma_health_probes_total", Help: "Health probes by check type and result (success, failure, timeout).",
		}, []string{"type", "result"}),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dtma_health_probe_duration_seconds", Help: "Health probe latency by check type.", Buckets: buckets,
		}, []string{"type"}),
		heartbeats:        counter("dtma_heartbeat_sends_total", "Heartbeats sent to the backend (successful or not)."),
		heartbeatFails:    counter("dtma_heartbeat_failures_total", "Heartbeats that failed."),
		reconcileRuns:     counter("dtma_reconcile_runs_total", "Reconciles (relists of this host's containers) finished."),
		recreated:         counter("dtma_reconcile_recreated_total", "Containers recreated from a stored spec."),
		adopted:           counter("dtma_reconcile_adopted_total", "Labelled containers adopted."),
		removed:           counter("dtma_reconcile_removed_total", "Containers removed by the reconciler."),
		eventReconnects:   counter("dtma_docker_event_stream_reconnects_total", "Docker event stream resubscriptions after a break."),
		UnhealthyRestarts: counter("dtma_health_restarts_total", "Containers restarted by on_unhealthy: restart."),
		EventsDropped:     counter("dtma_events_subscribers_dropped_total", "GET /v1/events subscribers dropped for not keeping up."),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dtma_reconcile_duration_seconds", Help: "Reconcile (relist) duration.", Buckets: buckets,
		}),
		driftFound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dtma_reconcile_drift_instances", Help: "Instances in drift after the last reconcile.",
		}),
		EventsSubscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dtma_events_subscribers", Help: "GET /v1/events subscribers connected.",
		}),
		ResyncInterval: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dtma_resync_interval_seconds", Help: "How often the reconciler relists in full (DTMA_RESYNC_INTERVAL).",
		}),
	}
	reg.MustRegister(m.dockerDuration, m.dockerErrors, m.registryDuration, m.registryErrors, m.probes, m.probeDuration,
		m.reconcileDuration, m.driftFound, m.EventsSubscribers, m.ResyncInterval)
	// Pre-create the series alerting rules use, so they exist at 0.
	for _, op := range []string{"ping", "list", "inspect", "create", "start", "stop", "restart", "remove", "image", "logs", "events"} {
		m.dockerDuration.WithLabelValues(op)
	}
	return m
}

// Probe records one health probe (health.Config.OnProbe).
func (m *Metrics) Probe(checkType, result string, latency time.Duration) {
	m.probes.WithLabelValues(checkType, result).Inc()
	m.probeDuration.WithLabelValues(checkType).Observe(latency.Seconds())
}

// Heartbeat records one heartbeat send and whether it failed.
func (m *Metrics) Heartbeat(err error) {
	m.heartbeats.Inc()
	if err != nil {
		m.heartbeatFails.Inc()
	}
}

// Relisted, Recreated, Adopted, Removed and Resubscribed make Metrics an
// agent.Observer: the reconciler's runs, their duration and the drift
// they found, containers recreated, adopted and removed, and Docker event
// stream reconnects.
func (m *Metrics) Relisted(d time.Duration, drift int) {
	m.reconcileRuns.Inc()
	m.reconcileDuration.Observe(d.Seconds())
	m.driftFound.Set(float64(drift))
}

func (m *Metrics) Recreated()    { m.recreated.Inc() }
func (m *Metrics) Adopted()      { m.adopted.Inc() }
func (m *Metrics) Removed()      { m.removed.Inc() }
func (m *Metrics) Resubscribed() { m.eventReconnects.Inc() }
