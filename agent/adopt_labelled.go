package agent

// Adoption of containers labelled for this host that no row knows.

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/agentopia/dtma"
)

// adoptChunk is how many adopted rows are inserted in one registry
// transaction.
const adoptChunk = 250

// adoptLabelled records the containers labelled for this host that no
// record knows (the registry was lost, restored from an old backup, or a
// crash fell between create and record), rebuilding each record from its
// labels and inspect data. It never restarts or recreates a container.
// Containers are looked at again side by side (inspectWidth at once), each
// under its instance's lock, and the records inserted in bulk (adoptChunk
// rows a transaction; a chunk the registry refuses is inserted row by row,
// so one conflict costs only its own row). Two containers claiming one
// name or one id yield one record; the other is left alone.
func (a *Agent) adoptLabelled(ctx context.Context, cs []*dtma.Container) {
	if len(cs) == 0 {
		return
	}
	type candidate struct {
		inst   *dtma.Instance
		c      *dtma.Container
		unlock func()
	}
	cands := make([]*candidate, len(cs))
	parallel(len(cs), inspectWidth, func(i int) {
		inst, unlock := a.prepareAdoption(ctx, cs[i])
		if inst != nil {
			cands[i] = &candidate{inst: inst, c: cs[i], unlock: unlock}
		}
	})
	var batch []*candidate
	ids := map[string]bool{}
	accts := map[string]bool{}
	for _, cd := range cands {
		if cd == nil {
			continue
		}
		// A duplicate id or account id within the batch (two containers
		// claiming one instance): the first wins, as it would one by one.
		acct := cd.inst.AccountToolInstanceID
		if ids[cd.inst.ID] || (acct != "" && accts[acct]) {
			a.log.Warn("container claims an instance that already has a record; left alone", "container", cd.c.Name, "instance", cd.inst.Name)
			cd.unlock()
			continue
		}
		ids[cd.inst.ID] = true
		if acct != "" {
			accts[acct] = true
		}
		batch = append(batch, cd)
	}
	a.createMu.Lock()
	defer a.createMu.Unlock()
	for len(batch) > 0 {
		chunk := batch[:min(adoptChunk, len(batch))]
		batch = batch[len(chunk):]
		insts := make([]*dtma.Instance, len(chunk))
		for i, cd := range chunk {
			insts[i] = cd.inst
		}
		err := a.view.createMany(ctx, insts)
		for i, cd := range chunk {
			if err != nil {
				// Row by row: only the conflicting rows stay out.
				if e := a.view.create(ctx, insts[i]); e != nil {
					a.log.Error("adopt container", "container", cd.c.Name, "instance", cd.inst.Name, "err", e)
					cd.unlock()
					continue
				}
			}
			a.log.Info("adopted container", "instance", cd.inst.Name, "container", cd.c.Name, "id", cd.c.ID)
			a.obs.Adopted()
			cd.unlock()
		}
	}
}

// prepareAdoption takes the lock of the instance c is labelled with and
// inspects c again under it; it returns the record to insert, with the
// lock still held (unlock releases it), or nil (lock released) when c is
// not to be adopted: no valid name, an operation holds the name, a record
// already knows it, it is being removed or is not this host's, or it never
// started (then it is removed: what is left of an interrupted deploy).
func (a *Agent) prepareAdoption(ctx context.Context, c *dtma.Container) (*dtma.Instance, func()) {
	name := c.Labels[dtma.LabelInstance]
	// A UUID-shaped name is refused for new instances only: an older
	// agent may have labelled its container with one.
	if err := dtma.ValidateName(name); name == "" || (err != nil && !dtma.IsUUID(name)) {
		a.log.Warn("container labelled for this host has no valid instance name; left alone", "container", c.Name)
		return nil, nil
	}
	unlock, ok := a.locks.TryLock(name)
	if !ok {
		return nil, nil // a deploy of this name is in progress (or another container of this name is being adopted)
	}
	keep := false
	defer func() {
		if !keep {
			unlock()
		}
	}()
	id := strings.ToLower(c.Labels[dtma.LabelInstanceID])
	if a.view.get(id) != nil {
		return nil, nil
	}
	// The list may be stale: a remove that has just released the lock
	// deleted this container and then its record. Look again, under the
	// lock, so that a removed instance is never brought back.
	fresh, ierr := a.rt.InspectContainer(ctx, c.ID)
	if ierr != nil {
		return nil, nil
	}
	if fresh.State == dtma.DockerRemoving || fresh.Labels[dtma.LabelHost] != a.hostID {
		return nil, nil
	}
	c = fresh
	if neverStarted(c) {
		// Created, never started, and no record knows it: what is left of
		// a deploy the agent was killed in (Docker finishes a create whose
		// client died, possibly after the record was removed). It never
		// ran; remove it rather than give it a record.
		if err := a.rt.RemoveContainer(ctx, c.ID); err != nil {
			a.log.Warn("remove container of an interrupted deploy; will retry", "container", c.Name, "err", err)
			return nil, nil
		}
		a.log.Warn("removed a never-started container no record knows (an interrupted deploy)", "container", c.Name, "instance", name)
		a.obs.Removed()
		return nil, nil
	}
	if a.view.lookup(name) != nil {
		a.log.Warn("container claims an instance that already has a record; left alone", "container", c.Name, "instance", name)
		return nil, nil
	}
	if !dtma.IsUUID(id) {
		id = dtma.NewUUID()
	}
	inst := instanceFromContainer(c, id, name)
	inst.HostID = a.hostID
	inst.Status = a.statusFor(inst)
	inst.ObservedAt = nowUTC() // memory only: the registry does not keep it
	keep = true
	return inst, unlock
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
	if raw, ok := c.Labels[dtma.LabelMCP]; ok {
		var m dtma.MCP
		if json.Unmarshal([]byte(raw), &m) == nil {
			spec.MCP = m
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
