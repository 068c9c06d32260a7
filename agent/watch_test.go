package agent

import (
	"context"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/runtimetest"
)

// waitFor polls cond until it holds, failing the test after a generous cap
// (the loop under test works on 1 s ticks; nothing here is timed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runAgent runs the reconciler until the test ends.
func (b *bed) runAgent() {
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- b.a.Run(ctx) }()
	b.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			b.t.Errorf("Run did not return after its context ended")
		}
	})
}

// TestRun: the reconciler subscribes, relists, then applies events: a
// container stopped behind its back is recorded from the event, one
// removed behind its back is recreated after the destroy event, an unknown
// labelled container is adopted; a broken event stream and a Docker outage
// are followed by a resubscription and a relist.
func TestRun(t *testing.T) {
	b := newBed(t)
	row := b.seed("tool", dtma.DockerRunning, nil)
	gone := b.seed("gone", dtma.DockerRunning, nil)
	b.rt.Remove(gone.ContainerID) // while the agent was down
	b.open()
	b.runAgent()
	waitFor(t, "the first relist", func() bool { return !b.a.Health(b.ctx).LastObservedAt.IsZero() })
	if r := b.mustRow("gone"); r.Status != dtma.StatusRunning || b.rt.Container(r.ContainerID) == nil {
		t.Fatalf("the first relist did not recreate a vanished container: %s", r.Status)
	}
	waitFor(t, "the subscription", func() bool { return b.rt.Subscribers() == 1 })

	b.rt.SetState(row.ContainerID, dtma.DockerExited)
	waitFor(t, "the stop recorded from its event", func() bool {
		r := b.mustRow("tool")
		return r.DockerStatus == dtma.DockerExited && r.Drift()
	})

	b.rt.Remove(row.ContainerID)
	waitFor(t, "the recreate after the destroy event", func() bool {
		r := b.mustRow("tool")
		c := b.rt.Container("dtma-tool")
		return c != nil && c.ID != row.ContainerID && r.ContainerID == c.ID && c.State == dtma.DockerRunning
	})

	orphan := b.rt.AddContainer(dtma.Container{Name: "dtma-orphan", Image: testImage, State: dtma.DockerRunning,
		Labels: b.rt.Labels(dtma.LabelInstance, "orphan", dtma.LabelInstanceID, dtma.NewUUID())})
	waitFor(t, "the unknown container adopted", func() bool {
		r := b.row("orphan")
		return r != nil && r.ContainerID == orphan
	})

	subscribed := len(b.rt.CallsOf(runtimetest.Events))
	b.rt.BreakEvents(dtma.Errorf(dtma.EUNAVAILABLE, "stream reset"))
	waitFor(t, "the resubscription", func() bool {
		return len(b.rt.CallsOf(runtimetest.Events)) > subscribed && b.rt.Subscribers() == 1
	})

	lists := len(b.rt.CallsOf(runtimetest.ListContainers))
	b.rt.SetDown(true)
	// The stream breaks; the agent resubscribes and its relist fails.
	waitFor(t, "a relist attempt while Docker is down", func() bool {
		return len(b.rt.CallsOf(runtimetest.ListContainers)) > lists
	})
	if h := b.a.Health(b.ctx); h.DockerOK {
		t.Fatal("health says Docker is fine")
	}
	orphanRow := b.mustRow("orphan")
	b.rt.SetState(orphan, dtma.DockerExited) // while down: no event reaches the agent
	relists := len(b.rt.CallsOf(runtimetest.ListContainers))
	b.rt.SetDown(false)
	waitFor(t, "the relist after Docker came back", func() bool {
		return len(b.rt.CallsOf(runtimetest.ListContainers)) > relists && b.rt.Subscribers() == 1
	})
	waitFor(t, "the change made while Docker was down recorded", func() bool {
		return b.mustRow("orphan").DockerStatus == dtma.DockerExited
	})
	if orphanRow.DockerStatus != dtma.DockerRunning {
		t.Fatalf("orphan was %s before", orphanRow.DockerStatus)
	}
}

// TestRunResync: the periodic relist catches what no event reported.
func TestRunResync(t *testing.T) {
	b := newBed(t)
	row := b.seed("tool", dtma.DockerRunning, nil)
	b.cfg.ResyncInterval = 50 * time.Millisecond
	b.open()
	b.runAgent()
	waitFor(t, "the subscription", func() bool { return b.rt.Subscribers() == 1 })
	// Change the container without an event (events lost).
	b.rt.Update(row.ContainerID, func(c *dtma.Container) { c.State = dtma.DockerExited })
	waitFor(t, "the periodic relist to record the exit", func() bool {
		return b.mustRow("tool").DockerStatus == dtma.DockerExited
	})
}

// TestApplyEvent: what one event does, row by row.
func TestApplyEvent(t *testing.T) {
	b := newBed(t)
	row := b.seed("tool", dtma.DockerRunning, nil)
	b.open()
	b.relist()
	ev := func(id, action string) dtma.ContainerEvent {
		c := b.rt.Container(id)
		var l map[string]string
		if c != nil {
			l = c.Labels
		}
		return dtma.ContainerEvent{ContainerID: id, Action: action, Labels: l}
	}

	b.rt.SetState(row.ContainerID, dtma.DockerExited)
	if b.a.applyEvent(b.ctx, ev(row.ContainerID, "die")) {
		t.Error("a known container's event asked for a relist")
	}
	if r := b.mustRow("tool"); r.DockerStatus != dtma.DockerExited {
		t.Errorf("event not applied: %s", r.DockerStatus)
	}

	unknown := b.rt.AddContainer(dtma.Container{Name: "x", Image: testImage, State: dtma.DockerRunning, Labels: b.rt.Labels()})
	if !b.a.applyEvent(b.ctx, ev(unknown, "start")) {
		t.Error("an unknown container's event must ask for a relist")
	}
	if b.a.applyEvent(b.ctx, dtma.ContainerEvent{ContainerID: "feed", Action: "destroy"}) {
		t.Error("the destroy of an unknown container asked for a relist")
	}

	// An operation holds the lock: the event is left to it.
	unlock, _ := b.a.locks.TryLock("tool")
	b.rt.SetState(row.ContainerID, dtma.DockerRunning)
	if b.a.applyEvent(b.ctx, ev(row.ContainerID, "start")) {
		t.Error("event during an operation asked for a relist")
	}
	if r := b.mustRow("tool"); r.DockerStatus != dtma.DockerExited {
		t.Errorf("event applied while an operation held the lock")
	}
	unlock()

	// The container is gone by the time it is inspected.
	e := ev(row.ContainerID, "die")
	b.rt.Remove(row.ContainerID)
	if !b.a.applyEvent(b.ctx, e) {
		t.Error("an event for a vanished container must ask for a relist")
	}

	// A second container claims the instance: the relist decides.
	dup := b.rt.AddContainer(dtma.Container{Name: "dup", Image: testImage, State: dtma.DockerRunning, Labels: labels(row)})
	if !b.a.applyEvent(b.ctx, ev(dup, "start")) {
		t.Error("a second container of an instance must ask for a relist")
	}
}

// TestEventQueue: events coalesce per container, in first-seen order; a
// destroy is never overwritten by a later event of the same container.
func TestEventQueue(t *testing.T) {
	q := &eventQueue{byID: map[string]dtma.ContainerEvent{}, signal: make(chan struct{}, 1)}
	q.push(dtma.ContainerEvent{ContainerID: "a", Action: "start"})
	q.push(dtma.ContainerEvent{ContainerID: "b", Action: "start"})
	q.push(dtma.ContainerEvent{ContainerID: "a", Action: "die"})
	q.push(dtma.ContainerEvent{ContainerID: "b", Action: "destroy"})
	q.push(dtma.ContainerEvent{ContainerID: "b", Action: "create"})
	got := q.drain()
	if len(got) != 2 || got[0].ContainerID != "a" || got[0].Action != "die" || got[1].Action != "destroy" {
		t.Fatalf("drained %+v", got)
	}
	if len(q.drain()) != 0 {
		t.Fatal("drain did not empty the queue")
	}
	select {
	case <-q.signal:
	default:
		t.Fatal("push did not signal")
	}
}

// TestQuietRelist: a relist of a host where nothing changed inspects
// nothing and writes nothing; a full one inspects every container but
// still writes nothing.
func TestQuietRelist(t *testing.T) {
	b := newBed(t)
	b.seed("one", dtma.DockerRunning, nil)
	b.seed("two", dtma.DockerExited, nil)
	b.open()
	b.relist()
	before := b.rows()
	b.rt.ResetCalls()
	if err := b.a.Relist(b.ctx); err != nil {
		t.Fatal(err)
	}
	if calls := b.calls(); len(calls) != 1 || calls[0] != "ListContainers("+testHost+")" {
		t.Errorf("a quiet relist made %s, want one list call", fmtCalls(calls))
	}
	b.relist()
	if n := len(b.rt.CallsOf(runtimetest.InspectContainer)); n != 2 {
		t.Errorf("a full relist inspected %d containers, want 2", n)
	}
	for i, r := range b.rows() {
		if !r.UpdatedAt.Equal(before[i].UpdatedAt) {
			t.Errorf("row %s written by a quiet relist", r.Name)
		}
	}
	// A list entry that disagrees is inspected.
	b.rt.Update("dtma-one", func(c *dtma.Container) { c.State = dtma.DockerExited })
	b.rt.ResetCalls()
	if err := b.a.Relist(b.ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.rt.CallsOf(runtimetest.InspectContainer); len(got) != 1 {
		t.Errorf("inspected %d, want the one that changed", len(got))
	}
	// Docker down: the relist fails with EUNAVAILABLE and changes nothing.
	b.rt.SetDown(true)
	if err := b.a.Relist(b.ctx); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Errorf("relist with Docker down: %v", err)
	}
}

// TestRelistDuringOperation: a relist that runs while an operation holds
// the instance's lock leaves the instance to it (no second start, no
// adoption of the container being deployed), and a container a remove has
// just deleted is never brought back by a relist that listed it before.
func TestRelistDuringOperation(t *testing.T) {
	b := newBed(t)
	b.open()
	relisted := false
	b.rt.OnCall(runtimetest.StartContainer, func(string) {
		if !relisted {
			relisted = true
			if err := b.a.Relist(b.ctx); err != nil {
				t.Errorf("relist: %v", err)
			}
		}
	})
	inst, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
	if err != nil || !relisted {
		t.Fatalf("deploy: %v (relisted %v)", err, relisted)
	}
	if n := len(b.rt.CallsOf(runtimetest.StartContainer)); n != 1 {
		t.Errorf("%d starts, want the deploy's only", n)
	}
	if rows := b.rows(); len(rows) != 1 || rows[0].Status != dtma.StatusRunning || rows[0].ContainerID != inst.ContainerID {
		t.Errorf("rows after a deploy with a relist inside: %d", len(rows))
	}
	b.rt.OnCall(runtimetest.StartContainer, nil)

	// The relist lists the container, then a remove deletes container and
	// row before the relist looks at its rows: the relist's adoption must
	// look again and leave the gone container gone.
	removed := false
	b.rt.OnReturn(runtimetest.ListContainers, func(string) {
		b.rt.OnReturn(runtimetest.ListContainers, nil)
		removed = true
		if err := b.a.RemoveInstance(b.ctx, "tool"); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	b.relist()
	if !removed {
		t.Fatal("the remove did not run inside the relist")
	}
	if b.row("tool") != nil || len(b.rt.Containers()) != 0 {
		t.Fatalf("a removed instance came back: row %v, %d containers", b.row("tool") != nil, len(b.rt.Containers()))
	}
	if _, err := b.a.FindInstance(b.ctx, "tool"); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Fatalf("the view has the removed instance again")
	}
}
