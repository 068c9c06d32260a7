// Package agent implements dtma.InstanceService: it drives a dtma.Runtime
// (Docker) and keeps a dtma.Registry in step with it. Every lifecycle
// operation records its intent in the registry before it touches Docker and
// its outcome after, under a per-instance lock; the reconciler (Run) makes
// the registry and Docker agree after crashes, drift and outages.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentopia/dtma"
)

// Config tunes an Agent. Zero values take the defaults noted.
type Config struct {
	HostID  string // required
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

	// Now is the clock crash-loop windows and recreate backoff are
	// measured with; nil uses time.Now. Tests inject a fake clock.
	Now func() time.Time
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
	cfg Config
	log *slog.Logger
	reg dtma.Registry
	rt  dtma.Runtime

	locks    *keyedMutex // per instance name: one operation at a time
	createMu sync.Mutex  // serializes the check-and-insert phase of deploys

	mu   sync.RWMutex
	view map[string]*dtma.Instance // by ID: the registry's rows, kept current
	// dirty holds rows whose latest state could not be written (registry
	// down); deleted holds ids whose row must still be deleted.
	dirty   map[string]bool
	deleted map[string]bool
	// restarts holds, per instance id, when Docker restarted it recently.
	restarts map[string][]time.Time
	// recreate holds backoff state for containers that disappeared.
	recreate map[string]*backoff

	health healthState

	kick chan struct{} // asks the reconciler for a relist soon

	relists atomic.Uint64 // relists begun; every fullInspectEvery-th inspects everything
}

type backoff struct {
	failures int
	next     time.Time
}

type healthState struct {
	mu             sync.Mutex
	dockerErr      error
	registryErr    error
	lastObservedAt time.Time
}

// New loads the registry's rows for cfg.HostID into the agent's view and
// returns the agent. It does not touch Docker: the reconciler does, in Run.
// EUNAVAILABLE when the registry cannot be read.
func New(ctx context.Context, cfg Config, reg dtma.Registry, rt dtma.Runtime) (*Agent, error) {
	if cfg.HostID == "" {
		return nil, errors.New("agent: HostID is required")
	}
	cfg.setDefaults()
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger,
		reg:      reg,
		rt:       rt,
		locks:    newKeyedMutex(),
		view:     map[string]*dtma.Instance{},
		dirty:    map[string]bool{},
		deleted:  map[string]bool{},
		restarts: map[string][]time.Time{},
		recreate: map[string]*backoff{},
		kick:     make(chan struct{}, 1),
	}
	rows, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	now := a.cfg.Now()
	for _, inst := range rows {
		if h := inst.Spec.Hash(); inst.SpecHash != h {
			// Stored by an older agent with the hash over env values
			// (or otherwise stale): recompute from the stored spec and
			// let flush write it back.
			inst.SpecHash = h
			a.dirty[inst.ID] = true
		}
		a.view[inst.ID] = inst
		if inst.Status == dtma.StatusCrashLoop {
			// Restart times live in memory; the recorded status says
			// there were enough of them. Count them as of now, so the
			// instance stays crashloop for a window and clears only
			// when a window passes without a restart.
			for i := 0; i < a.cfg.CrashLoopRestarts; i++ {
				a.restarts[inst.ID] = append(a.restarts[inst.ID], now)
			}
		}
	}
	return a, nil
}

// snapshot returns copies of every instance in the view, oldest first.
func (a *Agent) snapshot() []*dtma.Instance {
	a.mu.RLock()
	out := make([]*dtma.Instance, 0, len(a.view))
	for _, inst := range a.view {
		out = append(out, inst.Clone())
	}
	a.mu.RUnlock()
	sortInstances(out)
	return out
}

func sortInstances(list []*dtma.Instance) {
	sort.Slice(list, func(i, j int) bool {
		if !list[i].CreatedAt.Equal(list[j].CreatedAt) {
			return list[i].CreatedAt.Before(list[j].CreatedAt)
		}
		return list[i].Name < list[j].Name
	})
}

// get returns a copy of the view's instance with that id, or nil.
func (a *Agent) get(id string) *dtma.Instance {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.view[id].Clone()
}

// lookup finds an instance by ref, in this order: the instance id, then
// the account tool instance id (both UUIDs, compared case-insensitively),
// then the name (exact). New names cannot have the shape of a UUID
// (dtma.ValidateName), so the three spaces cannot collide for rows created
// now; a row stored earlier under a UUID-shaped name still resolves by that
// name when no id or account id matches, and can no longer capture another
// instance's id or account id. It returns a copy or nil.
func (a *Agent) lookup(ref string) *dtma.Instance {
	a.mu.RLock()
	defer a.mu.RUnlock()
	lower := strings.ToLower(ref)
	var byAcct, byName *dtma.Instance
	for _, inst := range a.view {
		if inst.ID == lower {
			return inst.Clone()
		}
		if inst.AccountToolInstanceID != "" && inst.AccountToolInstanceID == lower {
			byAcct = inst
		}
		if inst.Name == ref {
			byName = inst
		}
	}
	if byAcct != nil {
		return byAcct.Clone()
	}
	return byName.Clone()
}

// find is lookup with ENOTFOUND.
func (a *Agent) find(ref string) (*dtma.Instance, error) {
	if inst := a.lookup(ref); inst != nil {
		return inst, nil
	}
	return nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q on this host", ref)
}

// putView stores a copy of inst in the view.
func (a *Agent) putView(inst *dtma.Instance) {
	a.mu.Lock()
	a.view[inst.ID] = inst.Clone()
	a.mu.Unlock()
}

// writeIntent records inst (an operation about to start) in the registry
// and the view. The operation must not proceed when it fails.
func (a *Agent) writeIntent(ctx context.Context, inst *dtma.Instance) error {
	if err := a.reg.UpdateInstance(ctx, inst); err != nil {
		a.noteRegistry(err)
		return fmt.Errorf("record intent for %s: %w", inst.Name, err)
	}
	a.noteRegistry(nil)
	a.mu.Lock()
	a.view[inst.ID] = inst.Clone()
	delete(a.dirty, inst.ID)
	a.mu.Unlock()
	return nil
}

// writeOutcome records inst after Docker acted. The view always takes it
// (it is what Docker now shows); when the registry cannot be written the row
// is marked dirty and written by the reconciler once the registry is back.
func (a *Agent) writeOutcome(ctx context.Context, inst *dtma.Instance) {
	err := a.reg.UpdateInstance(ctx, inst)
	a.noteRegistry(err)
	a.mu.Lock()
	a.view[inst.ID] = inst.Clone()
	if err != nil {
		a.dirty[inst.ID] = true
	} else {
		delete(a.dirty, inst.ID)
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("record outcome; will retry", "instance", inst.Name, "err", err)
	}
}

// dropInstance deletes the row and the view entry; when the registry cannot
// be written the deletion is retried by the reconciler.
func (a *Agent) dropInstance(ctx context.Context, inst *dtma.Instance) {
	err := a.reg.DeleteInstance(ctx, inst.ID)
	a.noteRegistry(err)
	a.mu.Lock()
	delete(a.view, inst.ID)
	delete(a.dirty, inst.ID)
	delete(a.restarts, inst.ID)
	delete(a.recreate, inst.ID)
	if err != nil {
		a.deleted[inst.ID] = true
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("delete record; will retry", "instance", inst.Name, "err", err)
	}
}

func (a *Agent) noteRegistry(err error) {
	if err != nil && dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		return // a conflict or not-found says the registry answered
	}
	a.health.mu.Lock()
	a.health.registryErr = err
	a.health.mu.Unlock()
}

// noteDocker records Docker's health from an operation's outcome: nil says
// it answered, EUNAVAILABLE that it did not. A failure of an image registry
// (dtma.ErrRegistry) says nothing about Docker and is ignored.
func (a *Agent) noteDocker(err error) {
	if err != nil && (dtma.ErrorCode(err) != dtma.EUNAVAILABLE || errors.Is(err, dtma.ErrRegistry)) {
		return
	}
	a.health.mu.Lock()
	prev := a.health.dockerErr
	a.health.dockerErr = err
	a.health.mu.Unlock()
	if prev == nil && err != nil {
		a.log.Error("docker unreachable", "err", err)
	} else if prev != nil && err == nil {
		a.log.Info("docker reachable again")
		a.requestRelist()
	}
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
	a.noteDocker(a.rt.Ping(ctx))
	a.noteRegistry(a.reg.Ping(ctx))
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	h := dtma.Health{
		Version:        a.cfg.Version,
		HostID:         a.cfg.HostID,
		DockerOK:       a.health.dockerErr == nil,
		RegistryOK:     a.health.registryErr == nil,
		LastObservedAt: a.health.lastObservedAt,
	}
	if a.health.dockerErr != nil {
		h.DockerError = dtma.ErrorMessage(a.health.dockerErr)
	}
	if a.health.registryErr != nil {
		h.RegistryError = dtma.ErrorMessage(a.health.registryErr)
	}
	return h
}

// requireDocker fails fast with EUNAVAILABLE when Docker does not answer,
// before any intent is written.
func (a *Agent) requireDocker(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := a.rt.Ping(pctx)
	a.noteDocker(err)
	if err != nil {
		if dtma.ErrorCode(err) == dtma.EUNAVAILABLE {
			return err
		}
		return dtma.Errorf(dtma.EUNAVAILABLE, "docker unavailable: %s", dtma.ErrorMessage(err))
	}
	return nil
}
