package agent

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// FindInstance implements dtma.InstanceService; it reads the agent's view
// of the registry, never Docker.
func (a *Agent) FindInstance(ctx context.Context, ref string) (*dtma.Instance, error) {
	return a.view.find(ref)
}

// ListInstances implements dtma.InstanceService from the agent's view. The
// instances are the view's own, shared and never changed by the agent (a
// change of a row stores a new copy): a caller must not change them (Clone
// one first). A list of a thousand rows copies none of them.
func (a *Agent) ListInstances(ctx context.Context) ([]*dtma.Instance, error) {
	return a.view.shared(), nil
}

// ListFleet implements dtma.InstanceService: it reads every host's rows
// from the registry. EUNAVAILABLE when the registry is down.
func (a *Agent) ListFleet(ctx context.Context) ([]*dtma.Instance, error) {
	return a.ListFleetPage(ctx, "", 0)
}

// ListFleetPage is ListFleet a page at a time: every host's rows in id
// order whose id sorts after after ("" from the start), at most limit (0:
// no bound), read from the registry with the bound applied there (a page
// of a 10k-row fleet costs a page). EINVALID for a malformed after,
// EUNAVAILABLE when the registry is down.
func (a *Agent) ListFleetPage(ctx context.Context, after string, limit int) ([]*dtma.Instance, error) {
	list, err := a.reg.FindInstances(ctx, dtma.InstanceFilter{AllHosts: true, AfterID: after, Limit: limit})
	a.health.noteRegistry(err)
	if err != nil {
		return nil, fmt.Errorf("list fleet: %w", err)
	}
	for i, inst := range list {
		if inst.HostID == a.hostID {
			if v := a.view.get(inst.ID); v != nil {
				list[i] = v
			}
		}
	}
	return list, nil
}

// resolveLocked finds ref and takes its instance lock, re-reading the
// instance under the lock. The caller must call unlock.
func (a *Agent) resolveLocked(ctx context.Context, ref string) (*dtma.Instance, func(), error) {
	inst, err := a.view.find(ref)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := a.lockInstance(ctx, inst.Name)
	if err != nil {
		return nil, nil, err
	}
	if inst = a.view.get(inst.ID); inst == nil {
		unlock()
		return nil, nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q on this host", ref)
	}
	return inst, unlock, nil
}

// StartInstance implements dtma.InstanceService. A missing container is
// recreated from the stored spec.
func (a *Agent) StartInstance(ctx context.Context, ref string) (*dtma.Instance, bool, error) {
	inst, unlock, err := a.resolveLocked(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	ctx, cancel := a.opContext(ctx)
	defer cancel()
	return a.startLocked(ctx, inst, dtma.OpStart, dtma.PullMissing)
}

// ensureRunning is the idempotent re-deploy: the instance exists with the
// same spec; make sure it runs. Caller holds the instance lock.
func (a *Agent) ensureRunning(ctx context.Context, inst *dtma.Instance, policy dtma.PullPolicy) (*dtma.Instance, error) {
	inst, _, err := a.startLocked(ctx, inst, dtma.OpDeploy, policy)
	return inst, err
}

// startLocked records the intent (desired running), starts or recreates
// the container and records the outcome. Caller holds the instance lock.
func (a *Agent) startLocked(ctx context.Context, inst *dtma.Instance, op dtma.Op, policy dtma.PullPolicy) (*dtma.Instance, bool, error) {
	status := dtma.StatusStarting
	if op == dtma.OpDeploy {
		status = dtma.StatusDeploying
	}
	c, err := a.beginOp(ctx, inst, dtma.DesiredRunning, op, status)
	if err != nil {
		return nil, false, err
	}
	if c == nil {
		if err := a.createAndStart(ctx, inst, policy); err != nil {
			return nil, false, a.fail(ctx, inst, err)
		}
		a.log.Info("recreated", "instance", inst.Name, "container", inst.ContainerID)
		return inst.Clone(), true, nil
	}
	inst.ContainerID = c.ID
	already, err := a.rt.StartContainer(ctx, c.ID)
	if err != nil {
		return nil, false, a.fail(ctx, inst, fmt.Errorf("start %s: %w", inst.Name, err))
	}
	a.settle(ctx, inst)
	return inst.Clone(), !already, nil
}

// beginOp starts a lifecycle operation on inst (caller holds its lock):
// it refuses an instance being removed (ECONFLICT) and a Docker that does
// not answer (EUNAVAILABLE) before anything is written, records the intent
// (desired state, operation, transient status), and returns the instance's
// container, nil when it has none.
func (a *Agent) beginOp(ctx context.Context, inst *dtma.Instance, desired dtma.DesiredState, op dtma.Op, status dtma.Status) (*dtma.Container, error) {
	if inst.PendingOp == dtma.OpRemove {
		return nil, dtma.Errorf(dtma.ECONFLICT, "instance %q is being removed", inst.Name)
	}
	if err := a.requireDocker(ctx); err != nil {
		return nil, err
	}
	inst.DesiredState = desired
	inst.PendingOp = op
	inst.Status = status
	if err := a.view.writeIntent(ctx, inst); err != nil {
		return nil, err
	}
	c, err := a.containerOf(ctx, inst)
	if err != nil {
		return nil, a.fail(ctx, inst, err)
	}
	return c, nil
}

// StopInstance implements dtma.InstanceService.
func (a *Agent) StopInstance(ctx context.Context, ref string, timeout time.Duration) (*dtma.Instance, bool, error) {
	inst, unlock, err := a.resolveLocked(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	ctx, cancel := a.opContext(ctx)
	defer cancel()
	if timeout <= 0 {
		timeout = a.cfg.StopTimeout
	}
	c, err := a.beginOp(ctx, inst, dtma.DesiredStopped, dtma.OpStop, dtma.StatusStopping)
	if err != nil {
		return nil, false, err
	}
	already := true
	if c != nil {
		inst.ContainerID = c.ID
		already, err = a.rt.StopContainer(ctx, c.ID, timeout)
		if err != nil && dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return nil, false, a.fail(ctx, inst, fmt.Errorf("stop %s: %w", inst.Name, err))
		}
	}
	a.settle(ctx, inst)
	return inst.Clone(), !already, nil
}

// RestartInstance implements dtma.InstanceService.
func (a *Agent) RestartInstance(ctx context.Context, ref string) (*dtma.Instance, error) {
	inst, unlock, err := a.resolveLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ctx, cancel := a.opContext(ctx)
	defer cancel()
	c, err := a.beginOp(ctx, inst, dtma.DesiredRunning, dtma.OpRestart, dtma.StatusRestarting)
	if err != nil {
		return nil, err
	}
	if c == nil {
		if err := a.createAndStart(ctx, inst, dtma.PullMissing); err != nil {
			return nil, a.fail(ctx, inst, err)
		}
		return inst.Clone(), nil
	}
	inst.ContainerID = c.ID
	if err := a.rt.RestartContainer(ctx, c.ID, a.cfg.StopTimeout); err != nil {
		return nil, a.fail(ctx, inst, fmt.Errorf("restart %s: %w", inst.Name, err))
	}
	a.settle(ctx, inst)
	return inst.Clone(), nil
}

// RemoveInstance implements dtma.InstanceService: intent, force-remove the
// container, then delete the row — the row goes only once the container
// is gone.
func (a *Agent) RemoveInstance(ctx context.Context, ref string) error {
	inst, unlock, err := a.resolveLocked(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := a.opContext(ctx)
	defer cancel()
	if err := a.requireDocker(ctx); err != nil {
		return err
	}
	return a.removeLocked(ctx, inst)
}

func (a *Agent) removeLocked(ctx context.Context, inst *dtma.Instance) error {
	inst.PendingOp = dtma.OpRemove
	inst.Status = dtma.StatusRemoving
	if err := a.view.writeIntent(ctx, inst); err != nil {
		return err
	}
	c, err := a.containerOf(ctx, inst)
	if err != nil {
		return fmt.Errorf("remove %s: %w", inst.Name, err)
	}
	if c != nil {
		if err := a.removeContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("remove %s: %w", inst.Name, err)
		}
	}
	a.dropInstance(ctx, inst)
	a.log.Info("removed", "instance", inst.Name)
	return nil
}

// removeContainer force-removes the container. When Docker answers that a
// removal is already in progress (one asked for before the agent crashed),
// it waits (up to 30 s) for the container to be gone instead of failing
// with a conflict.
func (a *Agent) removeContainer(ctx context.Context, id string) error {
	err := a.rt.RemoveContainer(ctx, id)
	if dtma.ErrorCode(err) != dtma.ECONFLICT {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for sleep(wctx, 100*time.Millisecond) {
		c, ierr := a.rt.InspectContainer(wctx, id)
		if dtma.ErrorCode(ierr) == dtma.ENOTFOUND {
			return nil
		}
		if ierr != nil || c.State != dtma.DockerRemoving {
			return a.rt.RemoveContainer(ctx, id)
		}
	}
	return err
}

// InstanceLogs implements dtma.InstanceService. An instance without a
// container has no logs: an empty stream, not an error.
func (a *Agent) InstanceLogs(ctx context.Context, ref string, opts dtma.LogOptions) (io.ReadCloser, error) {
	inst, err := a.view.find(ref)
	if err != nil {
		return nil, err
	}
	c, err := a.containerOf(ctx, inst)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rc, err := a.rt.ContainerLogs(ctx, c.ID, opts)
	if err != nil {
		return nil, fmt.Errorf("logs %s: %w", inst.Name, err)
	}
	return rc, nil
}

// containerOf returns inst's container, or nil when it has none. It looks
// by container id first, then by name (a container of this instance left
// by an interrupted create). A container found by name that belongs to
// another instance is not returned.
func (a *Agent) containerOf(ctx context.Context, inst *dtma.Instance) (*dtma.Container, error) {
	if inst.ContainerID != "" {
		c, err := a.rt.InspectContainer(ctx, inst.ContainerID)
		if err == nil {
			return c, nil
		}
		if dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return nil, err
		}
	}
	if inst.Tracking == dtma.TrackContainerID {
		return nil, nil
	}
	c, err := a.rt.InspectContainer(ctx, inst.ContainerName)
	if err != nil {
		if dtma.ErrorCode(err) == dtma.ENOTFOUND {
			return nil, nil
		}
		return nil, err
	}
	if c.Labels[dtma.LabelHost] == a.hostID && c.Labels[dtma.LabelInstanceID] == inst.ID {
		return c, nil
	}
	return nil, nil
}
