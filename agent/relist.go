package agent

// Relist: one label-filtered list of this host's containers, matched to
// rows (by container id, instance-id label, or a claim by name and spec).

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

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

// inspectWidth is how many containers a relist inspects (and records) at
// once, and how many adoptions it prepares at once.
const inspectWidth = 16

// parallel calls f(0) … f(n-1) on at most width goroutines and returns
// when every call has.
func parallel(n, width int, f func(i int)) {
	if n <= 1 || width <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}(i)
	}
	wg.Wait()
}

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
	start := time.Now()
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
	type match struct {
		inst *dtma.Instance
		c    *dtma.Container
	}
	var matched []match
	// Read only: every instance is read again under its lock (lockCurrent)
	// before anything is done to it.
	for _, inst := range a.view.shared() {
		c := byID[inst.ContainerID]
		if c == nil {
			c = byInstanceID[inst.ID]
		}
		if c == nil {
			later = append(later, inst)
			continue
		}
		claimed[c.ID] = true
		matched = append(matched, match{inst, c})
	}
	// Each instance is reconciled under its own lock, so distinct
	// instances can be inspected and recorded side by side (as concurrent
	// requests are): a full relist of a thousand containers then costs
	// the inspects divided by the width, not their sum.
	parallel(len(matched), inspectWidth, func(i int) {
		a.reconcileListed(ctx, matched[i].inst, matched[i].c, full)
	})
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
	var unclaimed []*dtma.Container
	for _, c := range containers {
		if !claimed[c.ID] {
			unclaimed = append(unclaimed, c)
		}
	}
	a.adoptLabelled(ctx, unclaimed) // inspects them again, under their locks
	a.flush(ctx)
	a.health.observed(nowUTC())
	drift := 0
	for _, inst := range a.view.shared() {
		if inst.Drift() {
			drift++
		}
	}
	a.obs.Relisted(time.Since(start), drift)
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
