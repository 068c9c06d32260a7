package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentopia/dtma"
)

// AdoptContainer implements dtma.InstanceService: it brings a container the
// legacy agent created (no labels, named after the instance) under
// management without recreating or restarting it. Labels cannot be added
// to an existing container, so the instance is tracked by container id
// (Tracking container_id) until the agent next recreates it. It is
// idempotent: adopting an already adopted container answers "unchanged".
// Containers it cannot find, or that differ from the request (image), are
// reported as "skip" with the reason, never guessed at.
func (a *Agent) AdoptContainer(ctx context.Context, req dtma.AdoptRequest) (*dtma.AdoptResult, error) {
	req.Image = strings.TrimSpace(req.Image)
	req.AccountToolInstanceID = strings.ToLower(strings.TrimSpace(req.AccountToolInstanceID))
	if err := dtma.ValidateName(req.Name); err != nil {
		return nil, err
	}
	if req.AccountToolInstanceID != "" && !dtma.IsUUID(req.AccountToolInstanceID) {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "account_tool_instance_id", "must be a UUID")
	}
	if req.Image != "" {
		if err := dtma.ValidateImage(req.Image); err != nil {
			return nil, err
		}
	}
	unlock, err := a.lockInstance(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := a.requireDocker(ctx); err != nil {
		return nil, err
	}

	var c *dtma.Container
	var tried []string
	for _, cand := range adoptCandidates(req) {
		tried = append(tried, cand)
		found, err := a.rt.InspectContainer(ctx, cand)
		if err == nil {
			c = found
			break
		}
		if dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return nil, fmt.Errorf("adopt %s: %w", req.Name, err)
		}
	}
	skip := func(format string, args ...any) (*dtma.AdoptResult, error) {
		return &dtma.AdoptResult{Action: "skip", Reason: fmt.Sprintf(format, args...)}, nil
	}
	if c == nil {
		return skip("no container named %s", strings.Join(tried, " or "))
	}
	if existing := a.lookup(req.Name); existing != nil {
		if existing.ContainerID == c.ID {
			return &dtma.AdoptResult{Action: "unchanged", Instance: existing}, nil
		}
		return skip("instance %q is already managed with another container (%s)", req.Name, existing.ContainerName)
	}
	if req.AccountToolInstanceID != "" {
		if existing := a.lookup(req.AccountToolInstanceID); existing != nil {
			return skip("account tool instance %s is already managed as instance %q", req.AccountToolInstanceID, existing.Name)
		}
	}
	if h := c.Labels[dtma.LabelHost]; h != "" {
		return skip("container %s is already managed by DTMA (host %s)", c.Name, h)
	}
	for _, inst := range a.snapshot() {
		if inst.ContainerID == c.ID {
			return skip("container %s is already managed as instance %q", c.Name, inst.Name)
		}
	}
	if req.Image != "" && c.Image != req.Image {
		return skip("container %s runs image %s, the mapping says %s", c.Name, c.Image, req.Image)
	}

	spec := dtma.Spec{Image: c.Image, Ports: append([]dtma.Port(nil), c.Ports...)}
	if len(c.Env) > 0 {
		spec.Env = c.Env
	}
	desired := dtma.DesiredStopped
	if c.State == dtma.DockerRunning || c.State == dtma.DockerRestarting || c.State == dtma.DockerPaused {
		desired = dtma.DesiredRunning
	}
	inst := &dtma.Instance{
		ID:                    dtma.NewUUID(),
		HostID:                a.cfg.HostID,
		Name:                  req.Name,
		AccountToolInstanceID: req.AccountToolInstanceID,
		ContainerName:         c.Name,
		Spec:                  spec,
		SpecHash:              spec.Hash(),
		Ports:                 append([]dtma.Port(nil), c.Ports...),
		DesiredState:          desired,
		Tracking:              dtma.TrackContainerID,
		Observed:              normObserved(c.Observed()),
	}
	inst.Status = inst.SettledStatus()
	if req.DryRun {
		return &dtma.AdoptResult{Action: "adopt", Instance: inst}, nil
	}
	a.createMu.Lock()
	defer a.createMu.Unlock()
	if err := a.reg.CreateInstance(ctx, inst); err != nil {
		a.noteRegistry(err)
		return nil, fmt.Errorf("adopt %s: %w", req.Name, err)
	}
	inst.ObservedAt = nowUTC()
	a.putView(inst)
	a.log.Info("adopted legacy container", "instance", inst.Name, "container", c.Name, "id", c.ID)
	return &dtma.AdoptResult{Action: "adopt", Instance: inst.Clone()}, nil
}

// adoptCandidates lists the container names to look for: the one given, or
// the instance name as is and in the sanitized forms a legacy agent may
// have used.
func adoptCandidates(req dtma.AdoptRequest) []string {
	if req.Container != "" {
		return []string{req.Container}
	}
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(req.Name)
	add(strings.ReplaceAll(req.Name, " ", "-"))
	add(strings.ToLower(strings.ReplaceAll(req.Name, " ", "-")))
	add(strings.TrimPrefix(dtma.ContainerName(req.Name), "dtma-"))
	add(strings.ReplaceAll(req.Name, " ", "_"))
	return out
}
