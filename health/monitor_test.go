package health

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

type sink struct {
	mu     sync.Mutex
	events []dtma.Event
}

func (s *sink) Publish(e dtma.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *sink) all() []dtma.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]dtma.Event(nil), s.events...)
}

func running(id string, check dtma.HealthCheck) *dtma.Instance {
	return &dtma.Instance{ID: id, Name: "n-" + id, Status: dtma.StatusRunning, DesiredState: dtma.DesiredRunning,
		Observed: dtma.Observed{DockerStatus: dtma.DockerRunning, StartedAt: time.Now()},
		Spec:     dtma.Spec{Health: check}, Ports: []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 30000}}}
}

func TestMonitorEventsAndRestart(t *testing.T) {
	f := newFake()
	p := New(Config{Concurrency: 4, FirstProbe: time.Millisecond, Probe: f.probe})
	m := NewMonitor(p)
	var mu sync.Mutex
	list := []*dtma.Instance{running("a", dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second, Retries: 1, OnUnhealthy: "restart"})}
	m.List = func(context.Context) ([]*dtma.Instance, error) {
		mu.Lock()
		defer mu.Unlock()
		out := make([]*dtma.Instance, 0, len(list))
		for _, i := range list {
			out = append(out, i.Clone())
		}
		return out, nil
	}
	var restarts atomic.Int32
	var recorded atomic.Int32
	m.Restart = func(context.Context, string) error { restarts.Add(1); return nil }
	m.Record = func(context.Context, string, dtma.HealthStatus) error { recorded.Add(1); return nil }
	m.RestartBackoff = time.Hour // one restart only within the test
	ev := &sink{}
	m.Events = ev
	m.SyncEvery = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if cond() {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("never %s; events %+v", what, ev.all())
	}
	has := func(typ dtma.EventType, id string, health dtma.HealthState) func() bool {
		return func() bool {
			for _, e := range ev.all() {
				if e.Type == typ && e.InstanceID == id && (health == "" || e.Health == health) {
					return true
				}
			}
			return false
		}
	}
	wait("a healthy event", has(dtma.EventChanged, "a", dtma.HealthHealthy))
	// A new instance: created; a failing probe: unhealthy, one restart.
	mu.Lock()
	list = append(list, running("b", dtma.HealthCheck{Type: dtma.CheckNone}))
	mu.Unlock()
	wait("b created", has(dtma.EventCreated, "b", ""))
	f.set("127.0.0.1:30000", true)
	wait("a unhealthy", has(dtma.EventChanged, "a", dtma.HealthUnhealthy))
	wait("a restart", func() bool { return restarts.Load() == 1 })
	// Removal: a removed event and no more probes.
	mu.Lock()
	list = list[1:]
	mu.Unlock()
	wait("a removed", has(dtma.EventRemoved, "a", ""))
	if _, ok := p.Status("a"); ok {
		t.Error("a is still probed after removal")
	}
	if recorded.Load() < 2 {
		t.Errorf("%d health records, want one per transition (>= 2)", recorded.Load())
	}
	// Order: ids are not numbered here, but a's events come in the order
	// the transitions happened.
	var seq []dtma.HealthState
	for _, e := range ev.all() {
		if e.InstanceID == "a" && e.Type == dtma.EventChanged {
			seq = append(seq, e.Health)
		}
	}
	if len(seq) < 2 || seq[0] != dtma.HealthHealthy || seq[len(seq)-1] != dtma.HealthUnhealthy {
		t.Errorf("a's health events in order: %v", seq)
	}
}
