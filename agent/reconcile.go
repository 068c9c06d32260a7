package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Run is the reconciler. It subscribes to Docker's events for this host,
// then lists this host's containers once and makes the registry agree with
// them (Relist), then applies events as they come; it relists after every
// reconnect of the event stream, every ResyncInterval, and soon after an
// event that may need action (a container destroyed, an unknown container).
// Docker drops events for slow subscribers and forgets them across its own
// restarts, so events only make the agent faster; the relist is the source
// of truth. Run returns when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	wait := time.Second
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		events, errs := a.rt.Events(sctx)
		// Full: whatever happened while the agent was not subscribed
		// (down, or its stream broken) may have left no trace in a list.
		if err := a.relist(ctx, true); err != nil {
			cancel()
			level := slog.LevelDebug // noteDocker already said Docker went away
			if wait == time.Second {
				level = slog.LevelWarn
			}
			a.log.Log(ctx, level, "relist failed; retrying", "in", wait.String(), "err", err)
			if !a.waitRetry(ctx, wait) {
				break
			}
			// A failed attempt against a daemon that is down costs next to
			// nothing, so the cap stays short: the agent relists within
			// seconds of Docker coming back, even with no API traffic.
			wait = min(wait*2, 5*time.Second)
			continue
		}
		wait = time.Second
		err := a.watch(ctx, events, errs)
		cancel()
		if ctx.Err() != nil {
			break
		}
		a.log.Warn("docker event stream broken; resubscribing", "err", err)
		if !sleep(ctx, 500*time.Millisecond) {
			break
		}
	}
	return nil
}

// waitRetry waits d before the next attempt to reach Docker, or less when
// an API call has meanwhile found Docker reachable again (noteDocker asks
// for a relist): the reconciler then relists at once. It returns false
// when ctx ends.
func (a *Agent) waitRetry(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a.kick:
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// eventQueue decouples reading Docker's event stream (which must never
// block: Docker drops events for slow subscribers) from handling them.
type eventQueue struct {
	mu     sync.Mutex
	byID   map[string]dtma.ContainerEvent // latest event per container
	order  []string
	signal chan struct{}
}

func (q *eventQueue) push(ev dtma.ContainerEvent) {
	q.mu.Lock()
	if _, ok := q.byID[ev.ContainerID]; !ok {
		q.order = append(q.order, ev.ContainerID)
	}
	prev, had := q.byID[ev.ContainerID]
	if !had || prev.Action != "destroy" {
		q.byID[ev.ContainerID] = ev
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) drain() []dtma.ContainerEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]dtma.ContainerEvent, 0, len(q.order))
	for _, id := range q.order {
		out = append(out, q.byID[id])
	}
	q.byID = map[string]dtma.ContainerEvent{}
	q.order = nil
	return out
}

// watch applies events until the stream breaks or ctx ends.
func (a *Agent) watch(ctx context.Context, events <-chan dtma.ContainerEvent, errs <-chan error) error {
	q := &eventQueue{byID: map[string]dtma.ContainerEvent{}, signal: make(chan struct{}, 1)}
	broken := make(chan error, 1)
	go func() {
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					broken <- fmt.Errorf("event stream closed")
					return
				}
				q.push(ev)
			case err, ok := <-errs:
				if !ok {
					err = fmt.Errorf("event stream closed")
				}
				broken <- err
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	relistSoon := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-broken:
			a.health.noteDocker(dtma.Errorf(dtma.EUNAVAILABLE, "docker event stream: %v", err))
			return err
		case <-q.signal:
			for _, ev := range q.drain() {
				if a.applyEvent(ctx, ev) {
					relistSoon = true
				}
			}
		case <-a.kick:
			relistSoon = true
		case <-tick.C:
			if relistSoon || a.recreate.due() {
				relistSoon = false
				if err := a.Relist(ctx); err != nil {
					a.log.Warn("relist failed", "err", err)
					relistSoon = true
				}
			} else {
				a.flush(ctx)
			}
		case <-resync.C:
			if err := a.Relist(ctx); err != nil {
				a.log.Warn("relist failed", "err", err)
			}
		}
	}
}

// applyEvent refreshes the instance an event is about. It reports whether
// a relist is needed (the container is gone, or no record knows it).
func (a *Agent) applyEvent(ctx context.Context, ev dtma.ContainerEvent) bool {
	inst := a.view.forContainer(ev.ContainerID, ev.Labels[dtma.LabelInstanceID])
	if inst == nil {
		return ev.Action != "destroy"
	}
	inst, unlock, ok := a.lockCurrent(inst)
	if !ok {
		return false // an operation is running (it records the outcome), or the instance is gone
	}
	defer unlock()
	c, err := a.rt.InspectContainer(ctx, ev.ContainerID)
	if err != nil {
		return dtma.ErrorCode(err) == dtma.ENOTFOUND
	}
	if inst.ContainerID != "" && inst.ContainerID != c.ID {
		return true // a second container claims this instance: let the relist decide
	}
	a.observe(ctx, inst, c) // records c.ID as the instance's container
	return false
}

// fullInspectEvery is how often a periodic relist inspects every
// container: one in that many. The relist after every (re)subscription to
// events (the first after start-up among them) is always full. The others
// inspect only the
// containers whose list entry disagrees with the record, because a list
// entry shows the state word but not StartedAt, exit code or restart
// count: a restart behind the agent's back while events were lost (same
// word before and after) is caught by the next full relist, at most
// fullInspectEvery resync intervals later.
const fullInspectEvery = 10

// Relist lists this host's containers in one call and makes the registry
// agree with Docker: it records observed state, finishes operations a crash
// interrupted, recreates containers that vanished while wanted running
// (with backoff), marks the others missing, and adopts containers labelled
// for this host that no record knows. Containers whose list entry agrees
// with their settled record are not inspected, except in a full relist
// (see fullInspectEvery). Instances with an operation in progress are left
// to it. EUNAVAILABLE when Docker cannot be listed.
func (a *Agent) Relist(ctx context.Context) error { return a.relist(ctx, false) }

// relist is Relist; full makes it inspect every container whatever the
// count.
func (a *Agent) relist(ctx context.Context, full bool) error {
	containers, err := a.rt.ListContainers(ctx)
	if err != nil {
		return fmt.Errorf("relist: %w", err)
	}
	full = a.relists.Add(1)%fullInspectEvery == 1 || full
	byID := map[string]*dtma.Container{}
	byInstanceID := map[string]*dtma.Container{}
	for _, c := range containers {
		byID[c.ID] = c
		if iid := c.Labels[dtma.LabelInstanceID]; iid != "" {
			byInstanceID[iid] = c
		}
	}
	claimed := map[string]bool{}
	var later []*dtma.Instance // rows with no container yet matched
	for _, inst := range a.view.snapshot() {
		c := byID[inst.ContainerID]
		if c == nil {
			c = byInstanceID[inst.ID]
		}
		if c == nil {
			later = append(later, inst)
			continue
		}
		claimed[c.ID] = true
		a.reconcileListed(ctx, inst, c, full)
	}
	for _, inst := range later {
		if inst.Tracking == dtma.TrackContainerID && inst.ContainerID != "" {
			// Unlabelled (migrated from the legacy agent): never listed,
			// looked up by id.
			found, err := a.rt.InspectContainer(ctx, inst.ContainerID)
			if err != nil && dtma.ErrorCode(err) != dtma.ENOTFOUND {
				return fmt.Errorf("relist: %w", err)
			}
			a.reconcileLocked(ctx, inst, found, true)
			continue
		}
		// A record restored from an older backup (or re-deployed after a
		// crash) may name the instance under another id: claim a
		// container of the same name and spec rather than create a
		// second one. Its ports may differ from the row's: both may have
		// been allocated, by different attempts. A container that never
		// ran is not worth keeping then (createContainer replaces it);
		// one that ran is, and the row takes its ports, which are where
		// the tool is really served.
		var c *dtma.Container
		for _, cand := range containers {
			if claimed[cand.ID] || cand.Labels[dtma.LabelInstance] != inst.Name ||
				!sameSpecHash(cand.Labels[dtma.LabelSpecHash], inst) || a.view.get(cand.Labels[dtma.LabelInstanceID]) != nil {
				continue
			}
			fc, err := a.rt.InspectContainer(ctx, cand.ID)
			if dtma.ErrorCode(err) == dtma.ENOTFOUND {
				continue
			} else if err != nil {
				return fmt.Errorf("relist: %w", err)
			}
			// The label hash leaves env values out; the container's own
			// config must carry the row's values for it to be this spec.
			if !sameEnvValues(fc, inst.Spec) {
				continue
			}
			if sameHostPorts(fc.Ports, inst.Ports) || !neverStarted(fc) {
				c = fc
				break
			}
		}
		if c != nil {
			claimed[c.ID] = true
			a.claimLocked(ctx, inst, c)
			continue
		}
		a.reconcileLocked(ctx, inst, nil, true)
	}
	for _, c := range containers {
		if !claimed[c.ID] {
			a.adoptLabelled(ctx, c) // inspects it again, under the lock
		}
	}
	a.flush(ctx)
	a.health.observed(nowUTC())
	return nil
}

// reconcileListed takes inst's lock (skipping it when an operation holds
// it) and reconciles it with its listed container s. Unless full is set, a
// settled record whose container the list shows in the recorded state is
// only marked observed now: nothing is inspected or written.
func (a *Agent) reconcileListed(ctx context.Context, inst *dtma.Instance, s *dtma.Container, full bool) {
	inst, unlock, ok := a.lockCurrent(inst)
	if !ok {
		return
	}
	defer unlock()
	if !full && a.listedUnchanged(inst, s) {
		inst.ObservedAt = nowUTC()
		a.view.remember(inst)
		return
	}
	c, err := a.rt.InspectContainer(ctx, s.ID)
	if err != nil {
		if dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return
		}
		c = nil // removed since the list
	}
	a.reconcile(ctx, inst, c)
}

// listedUnchanged reports whether the list entry s shows nothing the
// settled record inst does not already say: same container, same state
// word, no operation pending, status current. A restarting container is
// always inspected (its exit code and restart count move).
func (a *Agent) listedUnchanged(inst *dtma.Instance, s *dtma.Container) bool {
	return inst.PendingOp == dtma.OpNone && inst.ContainerID == s.ID && inst.DockerStatus == s.State &&
		s.State != dtma.DockerRestarting &&
		(inst.Status == a.statusFor(inst) || inst.Status == dtma.StatusError)
}

// claimLocked takes inst's lock and makes c, a container of inst's name
// and spec that no record knows, inst's container: the row takes c's ports
// when they differ, then is reconciled with it.
func (a *Agent) claimLocked(ctx context.Context, inst *dtma.Instance, c *dtma.Container) {
	inst, unlock, ok := a.lockCurrent(inst)
	if !ok {
		return
	}
	defer unlock()
	if !sameHostPorts(c.Ports, inst.Ports) {
		a.log.Warn("claimed a container of this instance left by an earlier attempt; recording its ports",
			"instance", inst.Name, "container", c.Name, "ports", c.Ports)
		inst.Ports = append([]dtma.Port(nil), c.Ports...)
		inst.ContainerID = c.ID
		a.view.writeOutcome(ctx, inst)
	}
	a.reconcile(ctx, inst, c)
}

// neverStarted reports whether c was created and never started: what is
// left of a deploy interrupted between create and start.
func neverStarted(c *dtma.Container) bool {
	return c.State == dtma.DockerCreated && c.StartedAt.IsZero()
}

// sameHostPorts reports whether a and b publish the same container ports
// on the same host ports, in any order (host IPs aside: one host port per
// protocol belongs to one instance).
func sameHostPorts(a, b []dtma.Port) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(p dtma.Port) string { return p.Key() + ">" + strconv.Itoa(p.HostPort) }
	count := map[string]int{}
	for _, p := range a {
		count[key(p)]++
	}
	for _, p := range b {
		if count[key(p)]--; count[key(p)] < 0 {
			return false
		}
	}
	return true
}

// lockCurrent takes inst's lock unless an operation holds it and returns
// the instance as the view has it now, with the unlock. ok is false, and
// nothing is held, when the lock is busy or the instance is gone.
func (a *Agent) lockCurrent(inst *dtma.Instance) (*dtma.Instance, func(), bool) {
	unlock, ok := a.locks.TryLock(inst.Name)
	if !ok {
		return nil, nil, false
	}
	cur := a.view.get(inst.ID)
	if cur == nil {
		unlock()
		return nil, nil, false
	}
	return cur, unlock, true
}

// reconcileLocked takes inst's lock (skipping it when an operation holds
// it) and reconciles it with its container c (nil: none).
func (a *Agent) reconcileLocked(ctx context.Context, inst *dtma.Instance, c *dtma.Container, verify bool) {
	inst, unlock, ok := a.lockCurrent(inst)
	if !ok {
		return
	}
	defer unlock()
	if c == nil && verify && inst.ContainerID != "" && inst.Tracking != dtma.TrackContainerID {
		// The list said nothing; make sure before acting on absence.
		if found, err := a.rt.InspectContainer(ctx, inst.ContainerID); err == nil {
			c = found
		} else if dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return
		}
	}
	a.reconcile(ctx, inst, c)
}

// reconcile makes inst agree with its container c (nil: none). Caller
// holds inst's lock.
func (a *Agent) reconcile(ctx context.Context, inst *dtma.Instance, c *dtma.Container) {
	if c != nil && c.Summary {
		full, err := a.rt.InspectContainer(ctx, c.ID)
		if err != nil && dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return
		}
		c = full
	}
	// The row was last written when its pending operation was recorded:
	// nothing writes it while the operation holds the lock.
	intentAt := inst.UpdatedAt
	if c != nil {
		a.observe(ctx, inst, c) // records c.ID as the instance's container
		running := c.State == dtma.DockerRunning || c.State == dtma.DockerRestarting
		switch inst.PendingOp {
		case dtma.OpNone:
			return // drift is recorded, never fought
		case dtma.OpDeploy, dtma.OpStart, dtma.OpRestart:
			if inst.PendingOp == dtma.OpRestart && running && !c.StartedAt.After(intentAt) {
				// Running since before the restart was asked for: the
				// request may never have reached Docker, or Docker may be
				// about to stop the container for it. Restart it (again):
				// Docker serializes the two, and a second restart is
				// harmless where a missed one is not.
				if err := a.rt.RestartContainer(ctx, c.ID, a.cfg.StopTimeout); err != nil {
					a.fail(ctx, inst, fmt.Errorf("finish restart of %s: %w", inst.Name, err))
					return
				}
			} else if !running {
				if _, err := a.rt.StartContainer(ctx, c.ID); err != nil {
					a.fail(ctx, inst, fmt.Errorf("finish %s of %s: %w", inst.PendingOp, inst.Name, err))
					return
				}
			}
			a.log.Info("finished interrupted operation", "instance", inst.Name, "op", inst.PendingOp)
			a.settle(ctx, inst)
		case dtma.OpStop:
			if running {
				if _, err := a.rt.StopContainer(ctx, c.ID, a.cfg.StopTimeout); err != nil {
					a.fail(ctx, inst, fmt.Errorf("finish stop of %s: %w", inst.Name, err))
					return
				}
			}
			a.log.Info("finished interrupted operation", "instance", inst.Name, "op", inst.PendingOp)
			a.settle(ctx, inst)
		case dtma.OpRemove:
			if err := a.removeContainer(ctx, c.ID); err != nil {
				a.log.Warn("finish interrupted remove failed; will retry", "instance", inst.Name, "err", err)
				return
			}
			a.log.Info("finished interrupted remove", "instance", inst.Name)
			a.dropInstance(ctx, inst)
		}
		return
	}
	switch {
	case inst.PendingOp == dtma.OpRemove:
		a.log.Info("finished interrupted remove", "instance", inst.Name)
		a.dropInstance(ctx, inst)
	case inst.DesiredState == dtma.DesiredRunning:
		if !a.recreate.allowed(inst.ID) {
			return
		}
		a.log.Warn("container missing; recreating", "instance", inst.Name, "container", inst.ContainerName)
		gone := inst.Clone()
		inst.ContainerID = ""
		inst.PendingOp = dtma.OpDeploy
		inst.Status = dtma.StatusDeploying
		if err := a.view.writeIntent(ctx, inst); err != nil {
			// No container may be made before its intent is recorded, but
			// the view (and the row, once the registry is back) must still
			// say that the container is gone.
			a.noteMissing(ctx, gone)
			return
		}
		if err := a.createAndStart(ctx, inst, dtma.PullMissing); err != nil {
			a.recreate.failed(inst.ID)
			if dtma.ErrorCode(err) == dtma.EUNAVAILABLE {
				return // the intent stands; retried when Docker is back
			}
			if inst.ContainerID != "" {
				// Leave no container that failed to start: the instance
				// stays "container gone", which later relists retry (with
				// backoff) instead of taking it for a stop to respect.
				if rerr := a.rt.RemoveContainer(ctx, inst.ContainerID); rerr == nil {
					inst.ContainerID = ""
				}
			}
			a.fail(ctx, inst, err)
			return
		}
		a.recreate.forget(inst.ID)
	default:
		o := dtma.Observed{DockerStatus: dtma.DockerMissing}
		if inst.Observed != o || inst.PendingOp != dtma.OpNone || inst.Status != dtma.StatusMissing {
			inst.Observed = o
			inst.ContainerID = ""
			inst.PendingOp = dtma.OpNone
			inst.Status = dtma.StatusMissing
			a.view.writeOutcome(ctx, inst)
		}
	}
}

// noteMissing records that inst has no container, keeping any operation in
// progress. Caller holds inst's lock.
func (a *Agent) noteMissing(ctx context.Context, inst *dtma.Instance) {
	o := dtma.Observed{DockerStatus: dtma.DockerMissing}
	if inst.Observed == o {
		return
	}
	inst.Observed = o
	inst.ObservedAt = nowUTC()
	inst.Status = a.statusFor(inst)
	a.view.writeOutcome(ctx, inst)
}

// observe records what Docker shows of inst's container, writing to the
// registry only what changed. Caller holds inst's lock.
func (a *Agent) observe(ctx context.Context, inst *dtma.Instance, c *dtma.Container) {
	o := normObserved(c.Observed())
	if o.DockerStatus == dtma.DockerRunning && o.RestartCount > 0 && o.ExitCode == 0 {
		// Docker zeroes the exit code when its restart policy starts the
		// container again; keep the last one seen, which a crash loop is
		// reported with.
		o.ExitCode = inst.ExitCode
	}
	// Restart counts compare only within one container: a recreated
	// container starts again from zero.
	if o.ContainerID == inst.ContainerID && o.RestartCount > inst.RestartCount {
		a.restarts.note(inst.ID, o.RestartCount-inst.RestartCount)
	}
	changed := !sameObserved(o, inst.Observed)
	inst.Observed = o
	inst.ObservedAt = nowUTC()
	status := inst.Status
	if inst.PendingOp == dtma.OpNone && (changed || inst.Status != dtma.StatusError) {
		status = a.statusFor(inst)
	}
	switch {
	case status != inst.Status:
		inst.Status = status
		a.view.writeOutcome(ctx, inst)
	case changed:
		a.view.writeObserved(ctx, inst)
	default:
		a.view.remember(inst) // ObservedAt only: memory, no write
	}
}

// normObserved brings times to the registry's precision (microseconds,
// UTC) so that a value read back compares equal.
func normObserved(o dtma.Observed) dtma.Observed {
	o.StartedAt, o.FinishedAt = dtma.RegistryTime(o.StartedAt), dtma.RegistryTime(o.FinishedAt)
	return o
}

func sameObserved(a, b dtma.Observed) bool {
	return a.DockerStatus == b.DockerStatus && a.ContainerID == b.ContainerID &&
		a.StartedAt.Equal(b.StartedAt) && a.FinishedAt.Equal(b.FinishedAt) &&
		a.ExitCode == b.ExitCode && a.RestartCount == b.RestartCount
}

// adoptLabelled records a container labelled for this host that no record
// knows (the registry was lost, restored from an old backup, or a crash
// fell between create and record), rebuilding the record from its labels
// and inspect data. It never restarts or recreates the container.
func (a *Agent) adoptLabelled(ctx context.Context, c *dtma.Container) {
	name := c.Labels[dtma.LabelInstance]
	// A UUID-shaped name is refused for new instances only: an older
	// agent may have labelled its container with one.
	if err := dtma.ValidateName(name); name == "" || (err != nil && !dtma.IsUUID(name)) {
		a.log.Warn("container labelled for this host has no valid instance name; left alone", "container", c.Name)
		return
	}
	unlock, ok := a.locks.TryLock(name)
	if !ok {
		return // a deploy of this name is in progress; it records the container
	}
	defer unlock()
	id := strings.ToLower(c.Labels[dtma.LabelInstanceID])
	if a.view.get(id) != nil {
		return
	}
	// The list may be stale: a remove that has just released the lock
	// deleted this container and then its record. Look again, under the
	// lock, so that a removed instance is never brought back.
	fresh, ierr := a.rt.InspectContainer(ctx, c.ID)
	if ierr != nil {
		return
	}
	if fresh.State == dtma.DockerRemoving || fresh.Labels[dtma.LabelHost] != a.hostID {
		return
	}
	c = fresh
	if neverStarted(c) {
		// Created, never started, and no record knows it: what is left of
		// a deploy the agent was killed in (Docker finishes a create whose
		// client died, possibly after the record was removed). It never
		// ran; remove it rather than give it a record.
		if err := a.rt.RemoveContainer(ctx, c.ID); err != nil {
			a.log.Warn("remove container of an interrupted deploy; will retry", "container", c.Name, "err", err)
			return
		}
		a.log.Warn("removed a never-started container no record knows (an interrupted deploy)", "container", c.Name, "instance", name)
		return
	}
	if a.view.lookup(name) != nil {
		a.log.Warn("container claims an instance that already has a record; left alone", "container", c.Name, "instance", name)
		return
	}
	if !dtma.IsUUID(id) {
		id = dtma.NewUUID()
	}
	a.createMu.Lock()
	defer a.createMu.Unlock()
	inst := instanceFromContainer(c, id, name)
	inst.HostID = a.hostID
	inst.Status = a.statusFor(inst)
	err := a.reg.CreateInstance(ctx, inst)
	a.health.noteRegistry(err)
	if err != nil {
		a.log.Error("adopt container", "container", c.Name, "instance", name, "err", err)
		return
	}
	inst.ObservedAt = nowUTC()
	a.view.remember(inst)
	a.log.Info("adopted container", "instance", name, "container", c.Name, "id", c.ID)
}

// sameSpecHash reports whether a container's dtma.spec-hash label is the
// hash of inst's spec: the current form, or the form an older agent wrote
// (over env values), so that its containers are still recognised.
func sameSpecHash(label string, inst *dtma.Instance) bool {
	return label != "" && (label == inst.SpecHash || label == inst.Spec.Hash() || label == inst.Spec.LegacyHash())
}

// sameEnvValues reports whether the inspected container c sets every env
// variable of spec to the spec's value.
func sameEnvValues(c *dtma.Container, spec dtma.Spec) bool {
	for k, v := range spec.Env {
		if cv, ok := c.Env[k]; !ok || cv != v {
			return false
		}
	}
	return true
}

// instanceFromContainer rebuilds a record from a DTMA-labelled container.
func instanceFromContainer(c *dtma.Container, id, name string) *dtma.Instance {
	spec := dtma.Spec{Image: c.Image}
	if names, ok := c.Labels[dtma.LabelEnvNames]; ok {
		for _, n := range strings.Split(names, ",") {
			if v, ok := c.Env[n]; ok && n != "" {
				if spec.Env == nil {
					spec.Env = map[string]string{}
				}
				spec.Env[n] = v
			}
		}
	} else if len(c.Env) > 0 {
		spec.Env = c.Env
	}
	if raw, ok := c.Labels[dtma.LabelPorts]; ok {
		var ports []dtma.Port
		if json.Unmarshal([]byte(raw), &ports) == nil && len(ports) > 0 {
			spec.Ports = ports
		}
	} else {
		spec.Ports = append([]dtma.Port(nil), c.Ports...)
	}
	if raw, ok := c.Labels[dtma.LabelLimits]; ok {
		var l dtma.Limits
		if json.Unmarshal([]byte(raw), &l) == nil && dtma.ValidateLimits(l) == nil {
			spec.Limits = l
		}
	}
	// The hash is recomputed from the rebuilt spec rather than copied
	// from the label: an older agent's label hashed env values.
	hash := spec.Hash()
	desired := dtma.DesiredStopped
	if c.State == dtma.DockerRunning || c.State == dtma.DockerRestarting || c.State == dtma.DockerPaused {
		desired = dtma.DesiredRunning
	}
	return &dtma.Instance{
		ID:                    id,
		Name:                  name,
		AccountToolInstanceID: strings.ToLower(c.Labels[dtma.LabelAccountID]),
		ContainerName:         c.Name,
		Spec:                  spec,
		SpecHash:              hash,
		Ports:                 append([]dtma.Port(nil), c.Ports...),
		DesiredState:          desired,
		Tracking:              dtma.TrackLabel,
		Observed:              normObserved(c.Observed()),
	}
}

// flush writes rows the registry could not take earlier (it was down):
// owed deletions first (stopping at the first failure), then dirty rows
// whose instance lock is free.
func (a *Agent) flush(ctx context.Context) {
	dirty, deleted := a.view.pending()
	for _, id := range deleted {
		if a.view.retryDelete(ctx, id) != nil {
			return
		}
	}
	for _, id := range dirty {
		inst := a.view.get(id)
		if inst == nil {
			a.view.retryWrite(ctx, id) // forgets it
			continue
		}
		unlock, ok := a.locks.TryLock(inst.Name)
		if !ok {
			continue
		}
		a.view.retryWrite(ctx, id)
		unlock()
	}
}
