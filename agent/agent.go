// Package agent implements dtma.InstanceService: it drives a dtma.Runtime
// (Docker) and keeps a dtma.Registry in step with it. Every lifecycle
// operation records its intent in the registry before it touches Docker and
// its outcome after, under a per-instance lock; the reconciler (Run) makes
// the registry and Docker agree after crashes, drift and outages.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentopia/dtma"
)

// Config tunes an Agent. Zero values take the defaults noted.
type Config struct {
	Version string

	// ListenPort is the agent's own TCP port; no instance may take it.
	ListenPort int
	// PortRangeStart and PortRangeEnd bound host ports allocated for
	// requests with host port 0 (default 31000-31999).
	PortRangeStart, PortRangeEnd int
	// DefaultHostIP is the address ports without a host IP bind to; it is
	// used to probe whether a host port is free ("" = all interfaces).
	DefaultHostIP string

	StopTimeout      time.Duration // graceful stop (default 10 s)
	ResyncInterval   time.Duration // full relist period (default 30 s)
	OperationTimeout time.Duration // bound on one operation incl. pull (default 10 min)

	// CrashLoopRestarts restarts within CrashLoopWindow mark an instance
	// crashloop (defaults 5 and 5 min).
	CrashLoopRestarts int
	CrashLoopWindow   time.Duration

	// RecreateBackoffMin/Max bound the delay between attempts to recreate
	// a container that disappeared (defaults 1 s and 5 min).
	RecreateBackoffMin, RecreateBackoffMax time.Duration

	// DefaultLimits are the resource limits of every tool container that
	// neither its deploy nor the policy sets (a zero field: no limit).
	// MaxLimits bound per-deploy overrides (a zero field: only the static
	// bounds of dtma.ValidateLimits); a policy rule raises them for its
	// images. Containers keep the limits they were created with until the
	// agent next recreates them.
	DefaultLimits dtma.Limits
	MaxLimits     dtma.Limits
	// Policy grants matching images more capabilities or other limits;
	// nil grants nothing.
	Policy *dtma.Policy

	Logger *slog.Logger

	// PortFree reports whether nothing on the host binds the port; nil
	// uses a real bind probe.
	PortFree func(hostIP string, port int, proto string) bool

	// Registries says which registry hosts images may be pulled from;
	// nil is the default policy (no loopback, link-local or private
	// registry hosts).
	Registries *dtma.RegistryPolicy

	// Bridges runs the stdio instances' MCP bridges (mcpbridge.Host); nil
	// serves no bridge (stdio containers are still created for stdio).
	Bridges dtma.MCPBridges
	// StdioImages: a deploy that declares no mcp transport (every legacy
	// deploy) of a matching image is a stdio instance (DTMA_STDIO_IMAGES).
	StdioImages dtma.StdioImages

	// Now is the clock crash-loop windows and recreate backoff are
	// measured with; nil uses time.Now. Tests inject a fake clock.
	Now func() time.Time

	// Events receives a change event whenever the view records an
	// instance's creation, removal, or a change of its status, Docker
	// status, health or drift; nil publishes nothing. Publish must not
	// block.
	Events dtma.EventSink
	// Observer is told of the reconciler's work (metrics); nil: nothing.
	Observer Observer
}

func (c *Config) setDefaults() {
	if c.PortRangeStart == 0 && c.PortRangeEnd == 0 {
		c.PortRangeStart, c.PortRangeEnd = 31000, 31999
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 30 * time.Second
	}
	if c.OperationTimeout <= 0 {
		c.OperationTimeout = 10 * time.Minute
	}
	if c.CrashLoopRestarts <= 0 {
		c.CrashLoopRestarts = 5
	}
	if c.CrashLoopWindow <= 0 {
		c.CrashLoopWindow = 5 * time.Minute
	}
	if c.RecreateBackoffMin <= 0 {
		c.RecreateBackoffMin = time.Second
	}
	if c.RecreateBackoffMax <= 0 {
		c.RecreateBackoffMax = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PortFree == nil {
		c.PortFree = probePortFree
	}
	if c.Registries == nil {
		c.Registries = &dtma.RegistryPolicy{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Agent is the DTMA service. Create it with New, serve requests through its
// dtma.InstanceService methods, and run its reconciler with Run.
type Agent struct {
	cfg    Config
	hostID string // the registry's host; the runtime is scoped to it
	log    *slog.Logger
	reg    dtma.Registry
	rt     dtma.Runtime

	locks    *keyedMutex // per instance name: one operation at a time
	createMu sync.Mutex  // serializes the check-and-insert phase of deploys

	view   *view   // the host's rows; the only writer of them
	health *health // Docker's and the registry's reachability

	restarts *crashLoop       // Docker restarts per instance, for crashloop
	recreate *recreateBackoff // waits between recreates of vanished containers

	kick chan struct{} // asks the reconciler for a relist soon

	relists atomic.Uint64 // relists begun; every fullInspectEvery-th inspects everything

	obs        Observer      // metrics hooks, never nil
	bridgeKick chan struct{} // a row changed: the bridges follow (runBridges)
}

// New loads the registry's rows into the agent's view and returns the
// agent. The host id has one source: the agent serves the registry's host
// (reg.HostID()), and rt must be scoped to the same host. It does not
// touch Docker: the reconciler does, in Run. EINVALID when the registry
// has no host id or the runtime's differs; EUNAVAILABLE when the registry
// cannot be read.
func New(ctx context.Context, cfg Config, reg dtma.Registry, rt dtma.Runtime) (*Agent, error) {
	host := reg.HostID()
	if host == "" {
		return nil, dtma.Errorf(dtma.EINVALID, "agent: the registry has no host id")
	}
	if rh := rt.HostID(); rh != host {
		return nil, dtma.Errorf(dtma.EINVALID, "agent: the docker runtime is scoped to host %q, the registry to %q", rh, host)
	}
	cfg.setDefaults()
	a := &Agent{
		cfg:      cfg,
		hostID:   host,
		log:      cfg.Logger,
		reg:      reg,
		locks:    newKeyedMutex(),
		restarts: newCrashLoop(cfg.Now, cfg.CrashLoopRestarts, cfg.CrashLoopWindow),
		recreate: newRecreateBackoff(cfg.Now, cfg.RecreateBackoffMin, cfg.RecreateBackoffMax),
		kick:     make(chan struct{}, 1),

		bridgeKick: make(chan struct{}, 1),
	}
	a.health = &health{log: a.log, dockerBack: a.requestRelist}
	a.rt = healthRuntime{rt: rt, health: a.health}
	a.view = newView(reg, a.health, a.log)
	a.view.events = cfg.Events
	a.obs = cfg.Observer
	if a.obs == nil {
		a.obs = nopObserver{}
	}
	a.view.changed = a.kickBridges
	rows, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	for _, inst := range rows {
		// Stored by an older agent with the hash over env values (or
		// otherwise stale): recompute from the stored spec and let flush
		// write it back.
		h := inst.Spec.Hash()
		stale := inst.SpecHash != h
		inst.SpecHash = h
		a.view.load(inst, stale)
		if inst.Status == dtma.StatusCrashLoop {
			// Restart times live in memory; the recorded status says
			// there were enough of them. Count them as of now, so the
			// instance stays crashloop for a window and clears only
			// when a window passes without a restart.
			a.restarts.note(inst.ID, a.cfg.CrashLoopRestarts)
		}
	}
	return a, nil
}

// requestRelist asks the reconciler for a full relist soon.
func (a *Agent) requestRelist() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// opContext detaches an operation from the caller's cancellation (a
// client that hangs up must not leave a half-done operation) while keeping
// its values, and bounds it by OperationTimeout.
func (a *Agent) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), a.cfg.OperationTimeout)
}

// lockInstance takes the per-instance lock for name.
func (a *Agent) lockInstance(ctx context.Context, name string) (func(), error) {
	unlock, err := a.locks.Lock(ctx, name)
	if err != nil {
		return nil, dtma.Errorf(dtma.EUNAVAILABLE, "timed out waiting for another operation on %q", name)
	}
	return unlock, nil
}

// Health reports on Docker and the registry, pinging both.
func (a *Agent) Health(ctx context.Context) dtma.Health {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_ = a.rt.Ping(ctx) // the runtime records Docker's health
	a.health.noteRegistry(a.reg.Ping(ctx))
	h := dtma.Health{Version: a.cfg.Version, HostID: a.hostID}
	a.health.report(&h)
	return h
}

// requireDocker fails fast with EUNAVAILABLE when Docker does not answer,
// before any intent is written.
func (a *Agent) requireDocker(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := a.rt.Ping(pctx)
	if err != nil {
		if dtma.ErrorCode(err) == dtma.EUNAVAILABLE {
			return err
		}
		return dtma.Errorf(dtma.EUNAVAILABLE, "docker unavailable: %s", dtma.ErrorMessage(err))
	}
	return nil
}
