package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// Deploy implements dtma.InstanceService. The sequence is: validate; under
// the instance's lock and the create lock, check name, account id and ports
// and insert the row with status deploying (the intent); then pull, create
// and start the container and record the outcome. A failure before the
// container runs removes what was made (container, then row) so a failed
// deploy leaves nothing behind; a crash at any point leaves a row the
// reconciler finishes (see docs/ARCHITECTURE.md).
func (a *Agent) Deploy(ctx context.Context, req dtma.DeployRequest) (*dtma.Instance, bool, error) {
	if req.Spec.MCP.Transport == "" && a.cfg.StdioImages.Match(strings.TrimSpace(req.Spec.Image)) {
		// The operator's default for the image; an explicit "none" wins.
		req.Spec.MCP.Transport = dtma.MCPStdio
	}
	req.Normalize()
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	if err := a.checkLimits(req.Spec); err != nil {
		return nil, false, err
	}
	// Before any lock, write or pull: the registry host must be one the
	// daemon may be sent to.
	if err := a.cfg.Registries.CheckImage(ctx, req.Spec.Image); err != nil {
		return nil, false, err
	}
	unlock, err := a.lockInstance(ctx, req.Name)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	ctx, cancel := a.opContext(ctx)
	defer cancel()

	a.createMu.Lock()
	existing, err := a.matchExisting(req)
	if err != nil {
		a.createMu.Unlock()
		return nil, false, err
	}
	if existing != nil {
		a.createMu.Unlock()
		inst, err := a.ensureRunning(ctx, existing, req.PullPolicy)
		return inst, false, err
	}
	if err := a.requireDocker(ctx); err != nil {
		a.createMu.Unlock()
		return nil, false, err
	}
	view := a.view.shared() // read only
	ports, remaps, err := a.resolvePorts(view, "", req.Spec.Ports, req.OnPortConflict)
	if err != nil {
		a.createMu.Unlock()
		return nil, false, err
	}
	if req.Spec.MCP.IsStdio() {
		if req.Spec.MCP.BridgePort, err = a.allocBridgePort(view, ports); err != nil {
			a.createMu.Unlock()
			return nil, false, err
		}
	}
	inst := &dtma.Instance{
		ID:                    dtma.NewUUID(),
		HostID:                a.hostID,
		Name:                  req.Name,
		AccountToolInstanceID: req.AccountToolInstanceID,
		ContainerName:         a.containerNameFor(view, req.Name),
		Spec:                  req.Spec,
		SpecHash:              req.Spec.Hash(),
		Ports:                 ports,
		DesiredState:          dtma.DesiredRunning,
		Status:                dtma.StatusDeploying,
		PendingOp:             dtma.OpDeploy,
		Tracking:              dtma.TrackLabel,
		Observed:              dtma.Observed{DockerStatus: dtma.DockerMissing},
	}
	if err := a.view.create(ctx, inst); err != nil {
		a.createMu.Unlock()
		return nil, false, fmt.Errorf("record deploy of %s: %w", req.Name, err)
	}
	a.createMu.Unlock()
	a.log.Info("deploy", "instance", inst.Name, "container", inst.ContainerName, "image", inst.Spec.Image)
	for _, m := range remaps {
		// Once per instance: the row keeps the port it got, recreates and
		// re-deploys reuse it.
		a.log.Warn("requested host port remapped", "instance", inst.Name, "field", m.Field,
			"requested", m.Requested, "published", m.To, "protocol", m.Protocol, "reason", "host port "+m.Reason)
	}

	if err := a.createAndStart(ctx, inst, req.PullPolicy); err != nil {
		a.undoDeploy(ctx, inst, err)
		return nil, false, err
	}
	return inst.Clone(), true, nil
}

// matchExisting returns the instance an identical earlier deploy created,
// nil when the name and account id are both new, or ECONFLICT saying what
// differs. Caller holds createMu.
func (a *Agent) matchExisting(req dtma.DeployRequest) (*dtma.Instance, error) {
	byName, byAcct := a.view.byNameOrAccount(req.Name, req.AccountToolInstanceID)
	switch {
	case byName == nil && byAcct == nil:
		return nil, nil
	case byName == nil:
		return nil, dtma.FieldErrorf(dtma.ECONFLICT, "account_tool_instance_id",
			"account tool instance %s is already deployed as instance %q", req.AccountToolInstanceID, byAcct.Name)
	case byName.AccountToolInstanceID != req.AccountToolInstanceID:
		return nil, dtma.FieldErrorf(dtma.ECONFLICT, "account_tool_instance_id",
			"instance %q exists with account tool instance id %q, not %q", req.Name, byName.AccountToolInstanceID, req.AccountToolInstanceID)
	}
	if byName.PendingOp == dtma.OpRemove {
		return nil, dtma.Errorf(dtma.ECONFLICT, "instance %q is being removed; retry when it is gone", req.Name)
	}
	if !req.Spec.Equal(byName.Spec) {
		// Diff names env variables added or removed, never one whose
		// only change is its value (that would confirm a guessed secret).
		diff := byName.Spec.Diff(req.Spec)
		if byName.Spec.Limits != req.Spec.Limits {
			diff = append(diff, "limits")
		}
		if len(diff) == 0 {
			diff = []string{"spec"}
		}
		return nil, dtma.FieldErrorf(dtma.ECONFLICT, "name",
			"instance %q already exists with a different spec (differs: %s); remove it first or use another name", req.Name, strings.Join(diff, ", "))
	}
	return byName, nil
}

// containerNameFor derives the container name for a new instance, falling
// back to the disambiguated form when another instance of this host already
// uses the plain one.
func (a *Agent) containerNameFor(view []*dtma.Instance, name string) string {
	plain := dtma.ContainerName(name)
	for _, inst := range view {
		if inst.ContainerName == plain {
			return dtma.DisambiguatedContainerName(a.hostID, name)
		}
	}
	return plain
}

// labelsFor returns the labels of inst's container. Env values never go
// into labels; env names and the requested ports do, so that a lost record
// can be rebuilt exactly from the container.
func (a *Agent) labelsFor(inst *dtma.Instance) map[string]string {
	l := map[string]string{
		dtma.LabelManaged:    "true",
		dtma.LabelHost:       a.hostID,
		dtma.LabelInstance:   inst.Name,
		dtma.LabelInstanceID: inst.ID,
		dtma.LabelSpecHash:   inst.SpecHash,
		dtma.LabelEnvNames:   strings.Join(inst.Spec.EnvNames(), ","),
	}
	if inst.AccountToolInstanceID != "" {
		l[dtma.LabelAccountID] = inst.AccountToolInstanceID
	}
	ports := inst.Spec.Ports
	if ports == nil {
		ports = []dtma.Port{}
	}
	b, _ := json.Marshal(ports)
	l[dtma.LabelPorts] = string(b)
	if !inst.Spec.Limits.IsZero() {
		b, _ := json.Marshal(inst.Spec.Limits)
		l[dtma.LabelLimits] = string(b)
	}
	if inst.Spec.MCP != (dtma.MCP{}) {
		// With the token's SHA-256 and the bridge port, so that a row
		// rebuilt from labels keeps its bridge and its protection. The
		// hash tells a label reader nothing useful: whoever can read
		// labels can attach to the container's stdio directly.
		b, _ := json.Marshal(inst.Spec.MCP)
		l[dtma.LabelMCP] = string(b)
	}
	return l
}

// createAndStart makes inst's container exist and run, recording the
// container id as soon as it exists and the settled state at the end. It
// reuses a container of this instance left behind by a crash (found by its
// name and dtma.instance-id label), and moves to the disambiguated name when
// a foreign container holds the derived one.
func (a *Agent) createAndStart(ctx context.Context, inst *dtma.Instance, policy dtma.PullPolicy) error {
	// Rows stored before the registry policy existed (or before it was
	// tightened) are held to it too whenever a pull may happen.
	if policy != dtma.PullNever {
		if err := a.cfg.Registries.CheckImage(ctx, inst.Spec.Image); err != nil {
			return fmt.Errorf("deploy %s: %w", inst.Name, err)
		}
	}
	ensure := func() error {
		warning, err := a.rt.EnsureImage(ctx, inst.Spec.Image, policy)
		if err != nil {
			return fmt.Errorf("deploy %s: %w", inst.Name, imageField(err))
		}
		if warning != "" {
			a.log.Warn("image", "instance", inst.Name, "image", inst.Spec.Image, "warning", warning)
		}
		return nil
	}
	// Pull always: pull first. Otherwise create first, as `docker run`
	// does, and see to the image only when the create says something is
	// missing: a deploy of a present image then costs Docker no image
	// inspect.
	createFirst := policy != dtma.PullAlways
	if !createFirst {
		if err := ensure(); err != nil {
			return err
		}
	}
	id, err := a.createContainer(ctx, inst)
	if createFirst && dtma.ErrorCode(err) == dtma.ENOTFOUND {
		// The image is absent (or the network went away: the create
		// counts the shards again next time). Pull when the policy
		// allows, or say why not, then create again.
		if err := ensure(); err != nil {
			return err
		}
		id, err = a.createContainer(ctx, inst)
	}
	if err != nil {
		return fmt.Errorf("deploy %s: %w", inst.Name, err)
	}
	inst.ContainerID = id
	inst.Tracking = dtma.TrackLabel
	if err := a.view.writeIntent(ctx, inst); err != nil {
		return err
	}
	if _, err := a.rt.StartContainer(ctx, id); err != nil {
		return fmt.Errorf("start %s: %w", inst.Name, err)
	}
	a.settle(ctx, inst)
	return nil
}

// imageField names the image field in an EINVALID image error (absent
// with pull policy never, not pullable) so that callers see which request
// field is at fault; other errors are returned as they are.
func imageField(err error) error {
	var e *dtma.Error
	if errors.As(err, &e) && e.Code == dtma.EINVALID && e.Field == "" {
		c := *e
		c.Field = "image"
		return &c
	}
	return err
}

// reservedNameWait bounds how long createContainer waits for a container
// name that Docker reports taken but cannot inspect yet.
const reservedNameWait = 15 * time.Second

// createContainer creates inst's container, adopting one left by an
// earlier attempt for the same instance id.
func (a *Agent) createContainer(ctx context.Context, inst *dtma.Instance) (string, error) {
	retries := 0
	// How long a name may stay reserved by a create in progress elsewhere:
	// a create takes 200-300 ms on an idle daemon, seconds on a busy one.
	reservedUntil := time.Now().Add(reservedNameWait)
	for attempt := 0; attempt < 2; attempt++ {
		limits, caps := a.confinement(inst.Spec)
		cfg := dtma.ContainerConfig{
			Name:   inst.ContainerName,
			Image:  inst.Spec.Image,
			Env:    inst.Spec.Env,
			Ports:  inst.Ports,
			Labels: a.labelsFor(inst),
			Limits: limits,
			CapAdd: caps,
			Stdio:  inst.Spec.MCP.IsStdio(),
		}
		id, err := a.rt.CreateContainer(ctx, cfg)
		if err == nil {
			return id, nil
		}
		if dtma.ErrorCode(err) != dtma.ECONFLICT {
			return "", err
		}
		c, ierr := a.rt.InspectContainer(ctx, inst.ContainerName)
		if dtma.ErrorCode(ierr) == dtma.ENOTFOUND && time.Now().Before(reservedUntil) {
			// Docker reserves a name before the container can be
			// inspected: another agent is creating a container of that
			// name right now (or one was just removed). Look again.
			attempt--
			if !sleep(ctx, 50*time.Millisecond) {
				return "", dtma.Errorf(dtma.EUNAVAILABLE, "create %s: %v", inst.ContainerName, ctx.Err())
			}
			continue
		}
		if dtma.ErrorCode(ierr) == dtma.ENOTFOUND {
			return "", dtma.Errorf(dtma.EUNAVAILABLE, "container name %s is held by a create still in progress after %s; retry", inst.ContainerName, reservedNameWait)
		}
		if ierr != nil {
			return "", fmt.Errorf("name %s taken: %w", inst.ContainerName, ierr)
		}
		if c.Labels[dtma.LabelHost] == a.hostID && c.Labels[dtma.LabelInstanceID] == inst.ID {
			return c.ID, nil // ours, from an attempt interrupted by a crash
		}
		if c.Labels[dtma.LabelHost] == a.hostID && c.Labels[dtma.LabelInstance] == inst.Name &&
			neverStarted(c) && a.view.get(strings.ToLower(c.Labels[dtma.LabelInstanceID])) == nil && retries < 5 {
			// Left by an interrupted deploy of this name whose record is
			// gone (Docker finished the create after the agent died): it
			// never ran, so it makes way rather than push this instance
			// to another name.
			if rerr := a.rt.RemoveContainer(ctx, c.ID); rerr != nil {
				return "", fmt.Errorf("remove never-started %s: %w", inst.ContainerName, rerr)
			}
			a.log.Warn("removed a never-started container no record knows (an interrupted deploy)", "container", c.Name, "instance", inst.Name)
			retries++
			attempt--
			continue
		}
		alt := dtma.DisambiguatedContainerName(a.hostID, inst.Name)
		if inst.ContainerName == alt {
			return "", dtma.Errorf(dtma.ECONFLICT, "container name %s is taken by a container DTMA does not manage", inst.ContainerName)
		}
		inst.ContainerName = alt
		if err := a.view.writeIntent(ctx, inst); err != nil {
			return "", err
		}
	}
	return "", dtma.Errorf(dtma.ECONFLICT, "container name %s is taken", inst.ContainerName)
}

// undoDeploy removes what a failed deploy made: the container, then the
// row. When Docker cannot tell whether a container exists (it went away),
// the row stays, marked for removal, so that nothing can exist without a
// record; the reconciler finishes the removal.
func (a *Agent) undoDeploy(ctx context.Context, inst *dtma.Instance, cause error) {
	a.log.Warn("deploy failed; rolling back", "instance", inst.Name, "err", cause)
	ref := inst.ContainerID
	if ref == "" {
		ref = inst.ContainerName
	}
	c, err := a.rt.InspectContainer(ctx, ref)
	switch {
	case err == nil && c.Labels[dtma.LabelInstanceID] == inst.ID:
		err = a.rt.RemoveContainer(ctx, c.ID)
	case err == nil || dtma.ErrorCode(err) == dtma.ENOTFOUND:
		err = nil // nothing of ours to remove
	}
	if err != nil {
		inst.PendingOp = dtma.OpRemove
		inst.Status = dtma.StatusRemoving
		inst.LastError = dtma.ErrorMessage(cause)
		a.view.writeOutcome(ctx, inst)
		a.requestRelist()
		return
	}
	a.dropInstance(ctx, inst)
}
