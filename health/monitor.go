package health

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Monitor keeps a Prober's targets in step with the agent's instances:
// a running instance (no operation pending) whose effective check is
// enabled and has a published port is probed; any other is not. It is
// fed by instance events (Publish: a dtma.EventSink) and by a periodic
// full sync from the view (Run), the safety net. It reports health
// changes (Record, Events) and carries out on_unhealthy: restart.
type Monitor struct {
	Prober *Prober
	// List returns this host's instances (the agent's view: in memory).
	List func(ctx context.Context) ([]*dtma.Instance, error)
	// Record, when set, persists a health change (through the agent's
	// view, which writes the registry only when it changed).
	Record func(ctx context.Context, id string, st dtma.HealthStatus) error
	// Restart restarts an instance's container (on_unhealthy: restart).
	Restart func(ctx context.Context, id string) error
	// Events receives a health-change event per transition.
	Events dtma.EventSink
	// OnRestart is told of every restart the policy makes (metrics).
	OnRestart func()
	// BridgeHostIP is the address stdio instances' bridges listen on (the
	// agent's default host IP; "" = every address, probed on loopback).
	BridgeHostIP string
	// SyncEvery is the full sync's period (default 2 s).
	SyncEvery time.Duration
	// RestartBackoff is the first wait between policy restarts of one
	// instance (default 10 s), doubling to MaxRestartBackoff (default 5 min)
	// while it stays unhealthy; it resets once the instance is healthy.
	RestartBackoff, MaxRestartBackoff time.Duration
	Logger                            *slog.Logger

	mu       sync.Mutex
	known    map[string]known // what the previous sync saw, per id
	restarts map[string]*restartState
	kick     chan struct{}
	synced   bool
}

// known is what the monitor keeps of an instance between syncs: what an
// event shows of it and what the restart policy needs — not the instance
// (its spec, env and the rest), which the view already holds.
type known struct {
	event   dtma.Event // dtma.EventFromInstance: id, name, states, drift
	restart bool       // its effective check's on_unhealthy is restart
}

func knownOf(inst *dtma.Instance) known {
	c, _ := inst.EffectiveCheck()
	return known{event: dtma.EventFromInstance(dtma.EventChanged, inst, time.Time{}), restart: c.OnUnhealthy == dtma.OnUnhealthyRestart}
}

type restartState struct {
	next  time.Time // no policy restart before
	count int
}

// NewMonitor returns a Monitor on p; set its hooks, then call Run. Its
// Prober's OnChange must be left to the Monitor (it installs its own).
func NewMonitor(p *Prober) *Monitor {
	m := &Monitor{Prober: p, known: map[string]known{}, restarts: map[string]*restartState{},
		kick: make(chan struct{}, 1)}
	p.cfg.OnChange = m.changed
	return m
}

// TargetOf returns what inst is probed as, false when it is not probed: not
// running (or an operation pending), no enabled check, or no published
// port to dial. A stdio instance without a check of its own is probed
// through its bridge, which listens on bridgeIP ("" = every address).
func TargetOf(inst *dtma.Instance, bridgeIP string) (Target, bool) {
	c, isDefault := inst.EffectiveCheck()
	if !c.Enabled() || inst.PendingOp != dtma.OpNone || inst.DockerStatus != dtma.DockerRunning || inst.Status != dtma.StatusRunning {
		return Target{}, false
	}
	if m := inst.Spec.MCP; isDefault && m.IsStdio() {
		if m.BridgePort == 0 {
			return Target{}, false
		}
		return Target{ID: inst.ID, Name: inst.Name, Check: c, StartedAt: inst.StartedAt,
			Addr: Addr(dtma.Port{HostIP: bridgeIP, HostPort: m.BridgePort})}, true
	}
	p, ok := dtma.CheckPort(c, inst.Ports)
	if !ok || p.HostPort == 0 {
		return Target{}, false
	}
	return Target{ID: inst.ID, Name: inst.Name, Check: c, Addr: Addr(p), StartedAt: inst.StartedAt}, true
}

// Publish implements dtma.EventSink: the agent's instance changes make
// the monitor sync soon (in Run's goroutine; Publish never blocks).
func (m *Monitor) Publish(dtma.Event) {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run syncs until ctx ends, then stops every probe.
func (m *Monitor) Run(ctx context.Context) {
	every := m.SyncEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	defer m.Prober.Close()
	m.Sync(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
		m.Sync(ctx)
	}
}

// Sync sets the prober's targets from the instances List returns: probes
// start for instances that should be probed and stop (Prober.Remove waits
// for a probe in flight) for the others, removed ones included.
//
// It is also the event source: each instance is compared with what the
// previous sync saw (its live health included) and a created, changed
// (status, docker status, health, drift) or removed event is published to
// Events; the first sync only learns the state. Syncs run in Run's
// goroutine, so events are in order.
func (m *Monitor) Sync(ctx context.Context) {
	list, err := m.List(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	m.mu.Lock()
	first := !m.synced
	m.synced = true
	m.mu.Unlock()
	seen := make(map[string]bool, len(list))
	for _, inst := range list {
		seen[inst.ID] = true
		if t, ok := TargetOf(inst, m.BridgeHostIP); ok {
			// A verdict recorded for this container run (after it started)
			// is where probing resumes after an agent restart: no churn
			// of starting/healthy writes for every instance.
			if h := inst.Health; h.State != dtma.HealthUnknown && !inst.StartedAt.IsZero() && !h.ChangedAt.Before(inst.StartedAt) {
				t.Initial = h
			}
			m.Prober.Set(t)
		} else {
			m.Prober.Remove(inst.ID)
			if inst.Health.State != dtma.HealthUnknown && m.Record != nil {
				// Not running (or no check any more): no verdict. Recorded
				// once: the view then holds the zero state.
				if err := m.Record(ctx, inst.ID, dtma.HealthStatus{}); err != nil && m.Logger != nil {
					m.Logger.Debug("health not cleared", "instance", inst.Name, "err", err)
				}
			}
		}
		after := knownOf(m.overlay(inst))
		m.mu.Lock()
		before, had := m.known[inst.ID]
		m.known[inst.ID] = after
		m.mu.Unlock()
		if !first {
			if had {
				m.publish(&before.event, &after.event, now)
			} else {
				m.publish(nil, &after.event, now)
			}
		}
	}
	for _, id := range m.Prober.IDs() {
		if !seen[id] {
			m.Prober.Remove(id)
		}
	}
	var gone []dtma.Event
	m.mu.Lock()
	for id, k := range m.known {
		if !seen[id] {
			gone = append(gone, k.event)
			delete(m.known, id)
			delete(m.restarts, id)
		}
	}
	m.mu.Unlock()
	for i := range gone {
		m.publish(&gone[i], nil, now)
	}
}

// publish sends the event between before and after (nil: created,
// removed) to Events, if any.
func (m *Monitor) publish(before, after *dtma.Event, at time.Time) {
	if m.Events == nil {
		return
	}
	if e, ok := dtma.EventBetween(before, after, at); ok {
		m.Events.Publish(e)
	}
}

// overlay returns inst with Health set to the prober's live status when it
// is probed, to nothing when it is not (not running: no verdict). inst is
// never changed (lists share the agent's rows): when the health differs,
// the answer is a shallow copy.
func (m *Monitor) overlay(inst *dtma.Instance) *dtma.Instance {
	var st dtma.HealthStatus
	if _, probed := TargetOf(inst, m.BridgeHostIP); probed {
		st, _ = m.Prober.Status(inst.ID)
	}
	if inst.Health == st {
		return inst
	}
	c := *inst
	c.Health = st
	return &c
}

// changed is the Prober's OnChange: record, publish, and apply the
// restart policy.
func (m *Monitor) changed(id string, st dtma.HealthStatus) {
	ctx := context.Background()
	m.mu.Lock()
	k, isKnown := m.known[id]
	m.mu.Unlock()
	if m.Record != nil {
		if err := m.Record(ctx, id, st); err != nil && m.Logger != nil {
			m.Logger.Warn("health not recorded", "instance_id", id, "err", err)
		}
	}
	// The next sync (now) publishes the change, in order with the rest.
	select {
	case m.kick <- struct{}{}:
	default:
	}
	if st.State == dtma.HealthHealthy {
		m.mu.Lock()
		delete(m.restarts, id)
		m.mu.Unlock()
	}
	if st.State == dtma.HealthUnhealthy && isKnown && k.restart {
		go m.restart(ctx, id, k.event.Name)
	}
}

// restart restarts instance id (named name) unless its backoff has not
// expired; a restart that is not due is taken up by the next unhealthy
// transition (after the restart the check starts over, so each restart is
// followed by one).
func (m *Monitor) restart(ctx context.Context, id, name string) {
	first, max := m.RestartBackoff, m.MaxRestartBackoff
	if first <= 0 {
		first = 10 * time.Second
	}
	if max <= 0 {
		max = 5 * time.Minute
	}
	m.mu.Lock()
	rs := m.restarts[id]
	if rs == nil {
		rs = &restartState{}
		m.restarts[id] = rs
	}
	now := time.Now()
	if now.Before(rs.next) {
		wait := rs.next.Sub(now)
		m.mu.Unlock()
		// Wait out the backoff, then restart if it is still unhealthy.
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if st, ok := m.Prober.Status(id); !ok || st.State != dtma.HealthUnhealthy {
			return
		}
		m.mu.Lock()
	}
	rs.count++
	rs.next = time.Now().Add(min(first<<min(rs.count-1, 16), max))
	count := rs.count
	m.mu.Unlock()
	if m.Logger != nil {
		m.Logger.Warn("restarting unhealthy instance", "instance", name, "policy", "on_unhealthy=restart", "restarts", count)
	}
	if m.OnRestart != nil {
		m.OnRestart()
	}
	if err := m.Restart(ctx, id); err != nil && m.Logger != nil {
		m.Logger.Warn("restart of unhealthy instance failed", "instance", name, "err", err)
	}
}

// Service decorates a dtma.InstanceService: every instance it returns
// carries the prober's live health (state, last error, latency,
// consecutive failures, times, detail) — reads stay in memory, and the
// registry is written only on a change (Monitor.Record).
type Service struct {
	dtma.InstanceService
	Prober *Prober
}

func (s *Service) overlay(inst *dtma.Instance) *dtma.Instance {
	if inst == nil {
		return nil
	}
	return (&Monitor{Prober: s.Prober}).overlay(inst)
}

// overlayAll lays the live health over every instance of list, in place
// in the slice (a fresh one from ListInstances), never in the instances.
func (s *Service) overlayAll(list []*dtma.Instance, err error) ([]*dtma.Instance, error) {
	for i, inst := range list {
		list[i] = s.overlay(inst)
	}
	return list, err
}

func (s *Service) Deploy(ctx context.Context, req dtma.DeployRequest) (*dtma.Instance, bool, error) {
	inst, created, err := s.InstanceService.Deploy(ctx, req)
	return s.overlay(inst), created, err
}

func (s *Service) FindInstance(ctx context.Context, ref string) (*dtma.Instance, error) {
	inst, err := s.InstanceService.FindInstance(ctx, ref)
	return s.overlay(inst), err
}

func (s *Service) ListInstances(ctx context.Context) ([]*dtma.Instance, error) {
	return s.overlayAll(s.InstanceService.ListInstances(ctx))
}

func (s *Service) StartInstance(ctx context.Context, ref string) (*dtma.Instance, bool, error) {
	inst, changed, err := s.InstanceService.StartInstance(ctx, ref)
	return s.overlay(inst), changed, err
}

func (s *Service) StopInstance(ctx context.Context, ref string, timeout time.Duration) (*dtma.Instance, bool, error) {
	inst, changed, err := s.InstanceService.StopInstance(ctx, ref, timeout)
	return s.overlay(inst), changed, err
}

func (s *Service) RestartInstance(ctx context.Context, ref string) (*dtma.Instance, error) {
	inst, err := s.InstanceService.RestartInstance(ctx, ref)
	return s.overlay(inst), err
}

// BridgeStatus passes the stdio bridges' status through (dtma.MCPBridgeReporter),
// which the decorator would otherwise hide; false when the service has none.
func (s *Service) BridgeStatus(instanceID string) (dtma.MCPBridgeStatus, bool) {
	if r, ok := s.InstanceService.(dtma.MCPBridgeReporter); ok {
		return r.BridgeStatus(instanceID)
	}
	return dtma.MCPBridgeStatus{}, false
}
