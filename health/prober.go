// Package health probes tool servers: tcp connect, HTTP status, or the MCP
// protocol (initialize, ping, tools/list) through the official MCP SDK
// client. A Prober runs the checks of many instances with bounded
// concurrency and turns probe results into a health state (starting,
// healthy, unhealthy) the agent records when it changes.
package health

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Target is one instance to probe.
type Target struct {
	ID    string           // instance id
	Name  string           // for logs
	Check dtma.HealthCheck // as in the spec; defaults are applied here
	Addr  string           // host:port to dial (see Addr)
	// StartedAt is when the container last started; the start period
	// counts from it, and a new value starts the state over at starting.
	StartedAt time.Time
	// Initial, when its State is set, is the state to start from instead
	// of starting (a verdict recorded for this container run before the
	// agent restarted); it is not reported as a change.
	Initial dtma.HealthStatus
}

// Config configures a Prober. Zero fields take the defaults.
type Config struct {
	// Concurrency bounds the probes in flight at once (default 32): with
	// hundreds of instances on 2 cores, probes queue for a slot rather than
	// pile up; a probe's timeout runs only once it has a slot, and a target
	// never has more than one probe queued or in flight.
	Concurrency int
	// FirstProbe is the delay before a target's first probe (default 1 s,
	// at most its interval).
	FirstProbe time.Duration
	// OnChange is called, from the target's goroutine, when a target's
	// State changes (and with it ChangedAt): what the agent persists. It
	// is never called for a removed target.
	OnChange func(id string, st dtma.HealthStatus)
	// OnProbe is called after every probe (metrics); result is "success",
	// "failure" or "timeout".
	OnProbe func(t dtma.CheckType, result string, latency time.Duration)
	// Probe replaces the real probe (unit tests).
	Probe  func(ctx context.Context, c dtma.HealthCheck, addr string) Result
	Now    func() time.Time
	Logger *slog.Logger
}

// Prober runs health checks. Its methods are safe for concurrent use.
type Prober struct {
	cfg  Config
	sem  chan struct{}
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	targets map[string]*target
	wg      sync.WaitGroup
}

type target struct {
	t      Target
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex // guards st
	st dtma.HealthStatus
}

// New returns a running Prober; Close stops it.
func New(cfg Config) *Prober {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.FirstProbe <= 0 {
		cfg.FirstProbe = time.Second
	}
	if cfg.Probe == nil {
		cfg.Probe = Probe
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Prober{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), ctx: ctx, stop: stop, targets: map[string]*target{}}
}

// Set starts probing t, or updates it. A target whose check, address or
// StartedAt changed starts over at starting; an unchanged one keeps its
// state. A target whose check is not enabled is removed.
func (p *Prober) Set(t Target) {
	if !t.Check.Enabled() {
		p.Remove(t.ID)
		return
	}
	t.Check = t.Check.WithDefaults()
	p.mu.Lock()
	old := p.targets[t.ID]
	if old != nil && sameTarget(old.t, t) {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if old != nil {
		p.Remove(t.ID)
	}
	ctx, cancel := context.WithCancel(p.ctx)
	tg := &target{t: t, cancel: cancel, done: make(chan struct{})}
	tg.st = dtma.HealthStatus{State: dtma.HealthStarting, ChangedAt: dtma.RegistryTime(p.cfg.Now())}
	seeded := t.Initial.State != dtma.HealthUnknown
	if seeded {
		tg.st = t.Initial
		if t.Initial.State == dtma.HealthUnhealthy && tg.st.ConsecutiveFailures == 0 {
			tg.st.ConsecutiveFailures = t.Check.Retries
		}
	}
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		cancel()
		return
	}
	p.targets[t.ID] = tg
	p.wg.Add(1)
	p.mu.Unlock()
	if !seeded {
		p.notify(ctx, t.ID, tg.st)
	}
	go p.run(ctx, tg)
}

// sameTarget reports whether a and b probe the same thing (Initial is only
// a starting point).
func sameTarget(a, b Target) bool {
	a.Initial, b.Initial = dtma.HealthStatus{}, dtma.HealthStatus{}
	return a == b
}

// Remove stops probing id. When it returns no probe of id runs any more and
// OnChange is not called for it again.
func (p *Prober) Remove(id string) {
	p.mu.Lock()
	tg := p.targets[id]
	delete(p.targets, id)
	p.mu.Unlock()
	if tg != nil {
		tg.cancel()
		<-tg.done
	}
}

// Status returns the current health of id; false when it is not probed.
func (p *Prober) Status(id string) (dtma.HealthStatus, bool) {
	p.mu.Lock()
	tg := p.targets[id]
	p.mu.Unlock()
	if tg == nil {
		return dtma.HealthStatus{}, false
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.st, true
}

// IDs returns the ids being probed.
func (p *Prober) IDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.targets))
	for id := range p.targets {
		ids = append(ids, id)
	}
	return ids
}

// Close stops every probe and waits for them.
func (p *Prober) Close() {
	p.mu.Lock()
	p.stop()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Prober) run(ctx context.Context, tg *target) {
	defer p.wg.Done()
	defer close(tg.done)
	c := tg.t.Check
	timer := time.NewTimer(min(p.cfg.FirstProbe, c.Interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		select { // a slot; the timeout starts once we have one
		case <-ctx.Done():
			return
		case p.sem <- struct{}{}:
		}
		pctx, cancel := context.WithTimeout(ctx, c.Timeout)
		r := p.cfg.Probe(pctx, c, tg.t.Addr)
		timedOut := pctx.Err() == context.DeadlineExceeded
		cancel()
		<-p.sem
		if ctx.Err() != nil {
			return // removed while probing: the result is nobody's
		}
		result := "success"
		if r.Err != nil {
			result = "failure"
			if timedOut {
				result = "timeout"
			}
		}
		if p.cfg.OnProbe != nil {
			p.cfg.OnProbe(c.Type, result, r.Latency)
		}
		if st, changed := p.apply(tg, r); changed {
			p.cfg.Logger.Info("health changed", "instance", tg.t.Name, "health", st.String())
			p.notify(ctx, tg.t.ID, st)
		}
		timer.Reset(c.Interval)
	}
}

// apply folds a probe result into tg's state: a success is healthy; a
// failure counts, except within the start period while the tool has never
// been healthy since it started; Retries failures in a row are unhealthy.
func (p *Prober) apply(tg *target, r Result) (dtma.HealthStatus, bool) {
	now := dtma.RegistryTime(p.cfg.Now()) // as stored: UTC, microseconds
	c := tg.t.Check
	tg.mu.Lock()
	defer tg.mu.Unlock()
	st := tg.st
	prev := st.State
	st.CheckedAt = now
	st.LastLatency = r.Latency
	if r.Err == nil {
		st.State = dtma.HealthHealthy
		st.ConsecutiveFailures = 0
		st.Detail = r.Detail
	} else {
		st.LastError = r.Err.Error()
		st.Detail = ""
		inStart := prev == dtma.HealthStarting && !tg.t.StartedAt.IsZero() && now.Before(tg.t.StartedAt.Add(c.StartPeriod))
		if !inStart {
			st.ConsecutiveFailures++
			if st.ConsecutiveFailures >= c.Retries {
				st.State = dtma.HealthUnhealthy
			}
		}
	}
	if st.State != prev {
		st.ChangedAt = now
	}
	tg.st = st
	return st, st.State != prev
}

func (p *Prober) notify(ctx context.Context, id string, st dtma.HealthStatus) {
	if p.cfg.OnChange != nil && ctx.Err() == nil {
		p.cfg.OnChange(id, st)
	}
}
