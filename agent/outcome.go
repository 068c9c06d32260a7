package agent

// Recording what happened: settled and failed operations, observations,
// deletions, and the catch-up of rows the registry could not take.

import (
	"context"
	"time"

	"github.com/agentopia/dtma"
)

// settle inspects inst's container and records the settled state:
// operation cleared, status from Docker, last error cleared.
func (a *Agent) settle(ctx context.Context, inst *dtma.Instance) {
	if c, err := a.rt.InspectContainer(ctx, inst.ContainerID); err == nil {
		inst.Observed = normObserved(c.Observed())
		inst.ObservedAt = nowUTC()
	} else if dtma.ErrorCode(err) == dtma.ENOTFOUND {
		inst.Observed = dtma.Observed{DockerStatus: dtma.DockerMissing}
	}
	inst.PendingOp = dtma.OpNone
	inst.LastError = ""
	inst.Status = a.statusFor(inst)
	a.view.writeOutcome(ctx, inst)
}

// fail records a failed operation and returns err. When Docker went away
// mid-operation the intent stays (the reconciler finishes it once Docker is
// back); otherwise the operation is cleared and the error recorded.
func (a *Agent) fail(ctx context.Context, inst *dtma.Instance, err error) error {
	if dtma.ErrorCode(err) == dtma.EUNAVAILABLE {
		inst.LastError = dtma.ErrorMessage(err)
		a.view.writeOutcome(ctx, inst)
		return err
	}
	a.log.Warn("operation failed", "instance", inst.Name, "err", err)
	if c, ierr := a.containerOf(ctx, inst); ierr == nil {
		if c != nil {
			inst.Observed = normObserved(c.Observed())
		} else {
			inst.Observed = dtma.Observed{DockerStatus: dtma.DockerMissing}
		}
	}
	inst.PendingOp = dtma.OpNone
	inst.Status = dtma.StatusError
	inst.LastError = dtma.ErrorMessage(err)
	a.view.writeOutcome(ctx, inst)
	return err
}

// statusFor is the settled dtma status of inst: crashloop when Docker
// restarted it too often lately, otherwise what Docker shows.
func (a *Agent) statusFor(inst *dtma.Instance) dtma.Status {
	if inst.PendingOp != dtma.OpNone {
		return inst.Status
	}
	if inst.DesiredState == dtma.DesiredRunning && a.restarts.looping(inst.ID) {
		return dtma.StatusCrashLoop
	}
	return inst.SettledStatus()
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

// dropInstance deletes inst's row (view.drop) and forgets its restart
// history and recreate backoff.
func (a *Agent) dropInstance(ctx context.Context, inst *dtma.Instance) {
	a.view.drop(ctx, inst)
	a.restarts.forget(inst.ID)
	a.recreate.forget(inst.ID)
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

func nowUTC() time.Time { return time.Now().UTC() }
