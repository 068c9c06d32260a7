package agent

// The reconcile table: what the agent does for a row given its container
// (or none); see docs/ARCHITECTURE.md, "A Docker event".

import (
	"context"
	"fmt"

	"github.com/agentopia/dtma"
)

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
			a.obs.Removed()
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
		a.obs.Recreated()
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
