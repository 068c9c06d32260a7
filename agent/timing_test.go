package agent

import (
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// TestCrashLoop: Docker restarting a container CrashLoopRestarts (3) times
// within the window marks it crashloop with the last exit code seen; a
// window without a restart clears it. Time is the fake clock's.
func TestCrashLoop(t *testing.T) {
	b := newBed(t)
	row := b.seed("tool", dtma.DockerRunning, nil)
	b.open()
	b.relist()
	// The first crash is seen between the die and the restart: exit 3.
	b.rt.Update(row.ContainerID, func(c *dtma.Container) { c.ExitCode = 3 })
	b.rt.SetState(row.ContainerID, dtma.DockerExited)
	b.relist()
	if r := b.mustRow("tool"); r.ExitCode != 3 || r.Status != dtma.StatusStopped {
		t.Fatalf("after the exit: %s exit %d", r.Status, r.ExitCode)
	}
	steps := []struct {
		advance time.Duration
		crashes int
		want    dtma.Status
	}{
		{10 * time.Second, 1, dtma.StatusRunning},   // 1 restart
		{10 * time.Second, 1, dtma.StatusRunning},   // 2
		{10 * time.Second, 1, dtma.StatusCrashLoop}, // 3 within a minute
		{30 * time.Second, 0, dtma.StatusCrashLoop}, // first restart 50 s ago: still 3 in the window
		{25 * time.Second, 0, dtma.StatusRunning},   // first one out of the window
	}
	for i, s := range steps {
		b.clock.Advance(s.advance)
		for n := 0; n < s.crashes; n++ {
			b.rt.Crash(row.ContainerID, 3)
		}
		b.relist()
		r := b.mustRow("tool")
		if r.Status != s.want {
			t.Fatalf("step %d: status %s, want %s (restart count %d)", i, r.Status, s.want, r.RestartCount)
		}
		if r.ExitCode != 3 {
			t.Fatalf("step %d: exit code %d, want the last one seen (3)", i, r.ExitCode)
		}
	}
	// Several restarts between two looks count as several.
	b.rt.Crash(row.ContainerID, 1)
	b.rt.Crash(row.ContainerID, 1)
	b.rt.Crash(row.ContainerID, 1)
	b.relist()
	if r := b.mustRow("tool"); r.Status != dtma.StatusCrashLoop {
		t.Fatalf("three restarts seen at once: %s", r.Status)
	}
}

// TestCrashLoopSurvivesAgentRestart: a row recorded crashloop stays so
// after New (restart times live in memory; New counts them as of start-up)
// and clears once a window passes without a restart.
func TestCrashLoopSurvivesAgentRestart(t *testing.T) {
	b := newBed(t)
	b.seed("tool", dtma.DockerRunning, func(i *dtma.Instance) {
		i.Status, i.RestartCount, i.ExitCode = dtma.StatusCrashLoop, 7, 2
	})
	b.rt.Update("dtma-tool", func(c *dtma.Container) { c.RestartCount = 7 })
	b.open()
	b.relist()
	if r := b.mustRow("tool"); r.Status != dtma.StatusCrashLoop {
		t.Fatalf("after start-up: %s", r.Status)
	}
	b.clock.Advance(59 * time.Second)
	b.relist()
	if r := b.mustRow("tool"); r.Status != dtma.StatusCrashLoop {
		t.Fatalf("within the window: %s", r.Status)
	}
	b.clock.Advance(2 * time.Second)
	b.relist()
	if r := b.mustRow("tool"); r.Status != dtma.StatusRunning {
		t.Fatalf("a window without a restart: %s", r.Status)
	}
}

// TestRecreateBackoffTiming: a container that vanished while wanted running is
// recreated at once; when that fails the next attempt waits 1 s, then 2 s,
// 4 s, capped at 8 s (RecreateBackoffMax); a success resets the backoff.
// Relists in between make no attempt; a failed attempt leaves no container.
func TestRecreateBackoffTiming(t *testing.T) {
	b := newBed(t)
	row := b.seed("tool", dtma.DockerRunning, nil)
	b.open()
	b.rt.Remove(row.ContainerID)
	startErr := dtma.Errorf(dtma.EINTERNAL, "port is already allocated")
	b.rt.Fail(runtimetest.StartContainer, startErr)
	attempts := func() int { return len(b.rt.CallsOf(runtimetest.CreateContainer)) }

	b.relist()
	if attempts() != 1 {
		t.Fatalf("%d attempts, want one at once", attempts())
	}
	if r := b.mustRow("tool"); r.Status != dtma.StatusError || r.LastError == "" || len(b.rt.Containers()) != 0 {
		t.Fatalf("after a failed recreate: %s %q, %d containers", r.Status, r.LastError, len(b.rt.Containers()))
	}
	want := 1
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		b.clock.Advance(wait - time.Millisecond)
		if b.a.recreate.due() {
			t.Fatalf("recreate due before %s", wait)
		}
		b.relist()
		if attempts() != want {
			t.Fatalf("attempt before the %s backoff expired", wait)
		}
		b.clock.Advance(time.Millisecond)
		if !b.a.recreate.due() {
			t.Fatalf("recreate not due after %s", wait)
		}
		b.relist()
		want++
		if attempts() != want {
			t.Fatalf("%d attempts after %s, want %d", attempts(), wait, want)
		}
	}
	b.rt.Fail(runtimetest.StartContainer, nil)
	b.clock.Advance(8 * time.Second)
	b.relist()
	r := b.mustRow("tool")
	if r.Status != dtma.StatusRunning || r.LastError != "" || b.rt.Container(r.ContainerID) == nil {
		t.Fatalf("after a successful recreate: %s %q", r.Status, r.LastError)
	}
	if b.a.recreate.due() || len(b.a.recreate.state) != 0 {
		t.Fatalf("backoff not reset")
	}
	// Docker down during the recreate: the intent stands, retried later.
	b.rt.Remove(r.ContainerID)
	b.rt.OnCall(runtimetest.CreateContainer, func(string) { b.rt.SetDown(true) })
	b.relist()
	if r := b.mustRow("tool"); r.PendingOp != dtma.OpDeploy {
		t.Fatalf("intent lost: %q %s", r.PendingOp, r.Status)
	}
	b.rt.OnCall(runtimetest.CreateContainer, nil)
	b.rt.SetDown(false)
	b.clock.Advance(time.Second)
	b.relist()
	if r := b.mustRow("tool"); r.PendingOp != dtma.OpNone || r.Status != dtma.StatusRunning {
		t.Fatalf("after Docker came back: %q %s", r.PendingOp, r.Status)
	}
}

// TestDirtyRowCatchUp: what the agent observes while the registry is down
// is kept in the view, marked dirty, and written when the registry answers
// again (flush); deletions too. No container is created while the intent
// of a recreate cannot be recorded.
func TestDirtyRowCatchUp(t *testing.T) {
	b := newBed(t)
	stopped := b.seed("stopped", dtma.DockerRunning, nil)
	b.seed("removed", dtma.DockerExited, func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving })
	vanished := b.seed("vanished", dtma.DockerRunning, nil)
	b.open()
	// The pending remove is carried out, but its row cannot be deleted.
	b.reg.SetFail(failOps(registrytest.OpDeleteInstance))
	b.relist()
	if b.row("removed") == nil || len(b.a.view.deleted) != 1 {
		t.Fatalf("the deletion was to fail")
	}
	b.rt.SetState(stopped.ContainerID, dtma.DockerExited)
	b.rt.Remove(vanished.ContainerID)
	b.reg.SetFail(registrytest.Unavailable)
	b.rt.ResetCalls()
	b.relist()

	if v, _ := b.a.FindInstance(b.ctx, "stopped"); v.DockerStatus != dtma.DockerExited || v.Status != dtma.StatusStopped {
		t.Fatalf("view of stopped: %s %s", v.DockerStatus, v.Status)
	}
	if v, _ := b.a.FindInstance(b.ctx, "vanished"); v.DockerStatus != dtma.DockerMissing {
		t.Fatalf("view of vanished: %s", v.DockerStatus)
	}
	if _, err := b.a.FindInstance(b.ctx, "removed"); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Fatalf("removed still in the view")
	}
	if n := len(b.rt.CallsOf(runtimetest.CreateContainer)); n != 0 {
		t.Fatalf("a container was created without a recorded intent")
	}
	if h := b.a.Health(b.ctx); h.RegistryOK {
		t.Fatalf("health says the registry is fine")
	}
	// The registry is still down: nothing reached it.
	b.reg.SetFail(nil)
	if r := b.mustRow("stopped"); r.DockerStatus != dtma.DockerRunning {
		t.Fatalf("registry row written while down?")
	}
	b.reg.SetFail(registrytest.Unavailable)
	b.a.flush(b.ctx) // still down: kept
	b.reg.SetFail(nil)
	b.a.flush(b.ctx)
	if r := b.mustRow("stopped"); r.DockerStatus != dtma.DockerExited || r.Status != dtma.StatusStopped {
		t.Fatalf("after the flush: %s %s", r.DockerStatus, r.Status)
	}
	if r := b.mustRow("vanished"); r.DockerStatus != dtma.DockerMissing {
		t.Fatalf("vanished after the flush: %s", r.DockerStatus)
	}
	if b.row("removed") != nil {
		t.Fatalf("deleted row not deleted after the flush")
	}
	if dirty, deleted := b.a.view.pending(); len(dirty) != 0 || len(deleted) != 0 {
		t.Fatalf("dirty %v deleted %v", dirty, deleted)
	}
	// A row the registry lost meanwhile is created again.
	b.rt.SetState(stopped.ContainerID, dtma.DockerRunning)
	b.reg.SetFail(failOps(registrytest.OpUpdateInstance, registrytest.OpUpdateObserved))
	b.relist()
	b.reg.SetFail(nil)
	if err := b.reg.DeleteInstance(b.ctx, stopped.ID); err != nil {
		t.Fatal(err)
	}
	b.a.flush(b.ctx)
	if r := b.row("stopped"); r == nil || r.DockerStatus != dtma.DockerRunning {
		t.Fatalf("lost row not re-created by the flush: %v", r)
	}
	// Then the recreate goes ahead.
	b.clock.Advance(time.Minute)
	b.relist()
	if r := b.mustRow("vanished"); r.Status != dtma.StatusRunning || b.rt.Container(r.ContainerID) == nil {
		t.Fatalf("vanished not recreated once the registry answered: %s", r.Status)
	}
}
