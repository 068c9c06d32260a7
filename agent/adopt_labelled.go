package agent

// Adoption of containers labelled for this host that no row knows.

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/agentopia/dtma"
)

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
		a.obs.Removed()
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
	inst.ObservedAt = nowUTC() // memory only: the registry does not keep it
	if err := a.view.create(ctx, inst); err != nil {
		a.log.Error("adopt container", "container", c.Name, "instance", name, "err", err)
		return
	}
	a.log.Info("adopted container", "instance", name, "container", c.Name, "id", c.ID)
	a.obs.Adopted()
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
