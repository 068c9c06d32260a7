package agent

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// TestLifecycle: start, stop, restart and remove from each container state,
// with what they answer (changed), the row they leave and the calls they
// make. Already in the wanted state is a success with changed=false.
func TestLifecycle(t *testing.T) {
	type op func(b *bed, ref string) (changed bool, err error)
	start := func(b *bed, ref string) (bool, error) { _, ch, err := b.a.StartInstance(b.ctx, ref); return ch, err }
	stop := func(b *bed, ref string) (bool, error) { _, ch, err := b.a.StopInstance(b.ctx, ref, 0); return ch, err }
	restart := func(b *bed, ref string) (bool, error) { _, err := b.a.RestartInstance(b.ctx, ref); return true, err }
	remove := func(b *bed, ref string) (bool, error) { return true, b.a.RemoveInstance(b.ctx, ref) }
	cases := []struct {
		name        string
		state       dtma.DockerState // "" = no container
		op          op
		wantChanged bool
		wantRow     bool
		wantStatus  dtma.Status
		wantDesired dtma.DesiredState
		wantState   dtma.DockerState // the container's ("" = none)
		wantCalls   []string
	}{
		{"start a stopped one", dtma.DockerExited, start, true, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"StartContainer(c)"}},
		{"start a running one", dtma.DockerRunning, start, false, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"StartContainer(c)"}},
		{"start one whose container is gone: recreated", "", start, true, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"CreateContainer(dtma-tool)", "StartContainer(new)"}},
		{"stop a running one", dtma.DockerRunning, stop, true, true, dtma.StatusStopped, dtma.DesiredStopped, dtma.DockerExited, []string{"StopContainer(c)"}},
		{"stop a stopped one", dtma.DockerExited, stop, false, true, dtma.StatusStopped, dtma.DesiredStopped, dtma.DockerExited, []string{"StopContainer(c)"}},
		{"stop one whose container is gone", "", stop, false, true, dtma.StatusMissing, dtma.DesiredStopped, "", nil},
		{"restart a running one", dtma.DockerRunning, restart, true, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"RestartContainer(c)"}},
		{"restart a stopped one", dtma.DockerExited, restart, true, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"RestartContainer(c)"}},
		{"restart one whose container is gone: recreated", "", restart, true, true, dtma.StatusRunning, dtma.DesiredRunning, dtma.DockerRunning, []string{"CreateContainer(dtma-tool)", "StartContainer(new)"}},
		{"remove a running one", dtma.DockerRunning, remove, true, false, "", "", "", []string{"RemoveContainer(c)"}},
		{"remove one whose container is gone", "", remove, true, false, "", "", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			seeded := b.seed("tool", tc.state, nil)
			b.open()
			old := b.rt.Container("dtma-tool")
			b.rt.ResetCalls()
			changed, err := tc.op(b, "tool")
			if err != nil || changed != tc.wantChanged {
				t.Fatalf("changed=%v err=%v, want changed=%v", changed, err, tc.wantChanged)
			}
			row := b.row("tool")
			if !tc.wantRow {
				if row != nil {
					t.Fatalf("row left: %s", row.Status)
				}
			} else if row == nil {
				t.Fatal("row gone")
			} else if row.Status != tc.wantStatus || row.DesiredState != tc.wantDesired || row.PendingOp != dtma.OpNone || row.LastError != "" {
				t.Errorf("row %s desired %s pending %q error %q; want %s %s", row.Status, row.DesiredState, row.PendingOp, row.LastError, tc.wantStatus, tc.wantDesired)
			}
			c := b.rt.Container("dtma-tool")
			switch {
			case tc.wantState == "" && c != nil:
				t.Errorf("container left: %s", c.State)
			case tc.wantState != "" && (c == nil || c.State != tc.wantState):
				t.Errorf("container %v, want %s", c, tc.wantState)
			case c != nil && (row == nil || row.ContainerID != c.ID || c.Labels[dtma.LabelInstanceID] != seeded.ID):
				t.Errorf("row and container disagree")
			}
			nm := names(old, c)
			if old != nil {
				nm[old.ID] = "c"
			}
			if c != nil && (old == nil || c.ID != old.ID) {
				nm[c.ID] = "new"
			}
			if got := b.mutating(nm); !sameStrings(got, tc.wantCalls) {
				t.Errorf("calls %s, want %s", fmtCalls(got), fmtCalls(tc.wantCalls))
			}
		})
	}
}

// TestLifecycleRefs: a ref is a name, an account tool instance id (any
// case) or an instance id; anything else is ENOTFOUND.
func TestLifecycleRefs(t *testing.T) {
	b := newBed(t)
	seeded := b.seed("Tool One", dtma.DockerRunning, func(i *dtma.Instance) {
		i.AccountToolInstanceID = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
	})
	b.open()
	for _, ref := range []string{"Tool One", "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10", seeded.ID} {
		inst, err := b.a.FindInstance(b.ctx, ref)
		if err != nil || inst.ID != seeded.ID {
			t.Errorf("FindInstance(%q): %v", ref, err)
		}
	}
	_, err := b.a.FindInstance(b.ctx, "tool one")
	wantCode(t, err, dtma.ENOTFOUND)
	_, _, err = b.a.StopInstance(b.ctx, "nope", 0)
	wantCode(t, err, dtma.ENOTFOUND)
	_, _, err = b.a.StartInstance(b.ctx, "nope")
	wantCode(t, err, dtma.ENOTFOUND)
	_, err = b.a.RestartInstance(b.ctx, "nope")
	wantCode(t, err, dtma.ENOTFOUND)
	wantCode(t, b.a.RemoveInstance(b.ctx, "nope"), dtma.ENOTFOUND)
	_, err = b.a.InstanceLogs(b.ctx, "nope", dtma.LogOptions{})
	wantCode(t, err, dtma.ENOTFOUND)
}

// TestLifecycleUnavailable: with Docker or the registry down an operation
// answers 503 and changes nothing — no intent written, no Docker call that
// acts.
func TestLifecycleUnavailable(t *testing.T) {
	ops := map[string]func(b *bed) error{
		"start":   func(b *bed) error { _, _, err := b.a.StartInstance(b.ctx, "tool"); return err },
		"stop":    func(b *bed) error { _, _, err := b.a.StopInstance(b.ctx, "tool", time.Second); return err },
		"restart": func(b *bed) error { _, err := b.a.RestartInstance(b.ctx, "tool"); return err },
		"remove":  func(b *bed) error { return b.a.RemoveInstance(b.ctx, "tool") },
	}
	downs := map[string]func(b *bed){
		"docker":   func(b *bed) { b.rt.SetDown(true) },
		"registry": func(b *bed) { b.reg.SetFail(registrytest.Unavailable) },
	}
	for opName, op := range ops {
		for downName, down := range downs {
			t.Run(opName+" with "+downName+" down", func(t *testing.T) {
				b := newBed(t)
				seeded := b.seed("tool", dtma.DockerRunning, nil)
				b.open()
				down(b)
				b.rt.ResetCalls()
				wantCode(t, op(b), dtma.EUNAVAILABLE)
				b.reg.SetFail(nil)
				b.rt.SetDown(false)
				row := b.mustRow("tool")
				if row.PendingOp != dtma.OpNone || row.DesiredState != dtma.DesiredRunning || row.UpdatedAt != seeded.UpdatedAt {
					t.Errorf("row written: pending %q desired %s", row.PendingOp, row.DesiredState)
				}
				if got := b.mutating(nil); len(got) != 0 {
					t.Errorf("docker acted: %s", fmtCalls(got))
				}
				if c := b.rt.Container("dtma-tool"); c.State != dtma.DockerRunning {
					t.Errorf("container %s", c.State)
				}
			})
		}
	}
}

// TestLifecycleInterrupted: when Docker goes away in the middle of an
// operation the intent stays in the row (the answer is 503) and the
// reconciler finishes the operation once Docker is back.
func TestLifecycleInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		state     dtma.DockerState
		method    string
		op        func(b *bed) error
		pending   dtma.Op
		wantState dtma.DockerState // container after the relist; "" = gone
		wantRow   bool
	}{
		{"stop", dtma.DockerRunning, runtimetest.StopContainer,
			func(b *bed) error { _, _, err := b.a.StopInstance(b.ctx, "tool", 0); return err },
			dtma.OpStop, dtma.DockerExited, true},
		{"start", dtma.DockerExited, runtimetest.StartContainer,
			func(b *bed) error { _, _, err := b.a.StartInstance(b.ctx, "tool"); return err },
			dtma.OpStart, dtma.DockerRunning, true},
		{"restart", dtma.DockerRunning, runtimetest.RestartContainer,
			func(b *bed) error { _, err := b.a.RestartInstance(b.ctx, "tool"); return err },
			dtma.OpRestart, dtma.DockerRunning, true},
		{"remove", dtma.DockerRunning, runtimetest.RemoveContainer,
			func(b *bed) error { return b.a.RemoveInstance(b.ctx, "tool") },
			dtma.OpRemove, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			b.seed("tool", tc.state, nil)
			b.open()
			before := b.rt.Container("dtma-tool")
			b.rt.OnCall(tc.method, func(string) { b.rt.SetDown(true) })
			wantCode(t, tc.op(b), dtma.EUNAVAILABLE)
			row := b.mustRow("tool")
			if row.PendingOp != tc.pending {
				t.Fatalf("row pending %q, want the intent %q kept", row.PendingOp, tc.pending)
			}
			b.rt.OnCall(tc.method, nil)
			b.rt.SetDown(false)
			b.rt.ResetCalls()
			b.relist()
			c := b.rt.Container("dtma-tool")
			row = b.row("tool")
			switch {
			case !tc.wantRow:
				if row != nil || c != nil {
					t.Fatalf("remove not finished: row %v container %v", row != nil, c != nil)
				}
				return
			case row == nil || c == nil:
				t.Fatalf("row %v container %v", row != nil, c != nil)
			}
			if row.PendingOp != dtma.OpNone || c.State != tc.wantState || row.DockerStatus != tc.wantState {
				t.Errorf("after the relist: row pending %q docker %s, container %s; want %s", row.PendingOp, row.DockerStatus, c.State, tc.wantState)
			}
			if tc.pending == dtma.OpRestart && !c.StartedAt.After(before.StartedAt) {
				t.Errorf("restart not carried out: StartedAt unchanged")
			}
		})
	}
}

// TestLifecycleFailure: Docker refusing an operation (not an outage) is
// recorded as status error with the reason; the next successful operation
// clears it. A removal in progress blocks other operations.
func TestLifecycleFailure(t *testing.T) {
	b := newBed(t)
	b.seed("tool", dtma.DockerRunning, nil)
	b.open()
	b.rt.FailNext(runtimetest.StopContainer, dtma.Errorf(dtma.EINTERNAL, "cannot kill container: permission denied"))
	_, _, err := b.a.StopInstance(b.ctx, "tool", 0)
	wantCode(t, err, dtma.EINTERNAL)
	row := b.mustRow("tool")
	if row.Status != dtma.StatusError || row.PendingOp != dtma.OpNone || !strings.Contains(row.LastError, "permission denied") || row.DockerStatus != dtma.DockerRunning {
		t.Fatalf("row %s pending %q error %q docker %s", row.Status, row.PendingOp, row.LastError, row.DockerStatus)
	}
	// A relist keeps the error (it is the last operation's outcome).
	b.relist()
	if row := b.mustRow("tool"); row.Status != dtma.StatusError {
		t.Fatalf("relist cleared the error: %s", row.Status)
	}
	if _, _, err := b.a.StopInstance(b.ctx, "tool", 0); err != nil {
		t.Fatal(err)
	}
	if row := b.mustRow("tool"); row.Status != dtma.StatusStopped || row.LastError != "" {
		t.Fatalf("after a successful stop: %s %q", row.Status, row.LastError)
	}
	b.rt.FailNext(runtimetest.RestartContainer, dtma.Errorf(dtma.EINTERNAL, "restart refused"))
	if _, err := b.a.RestartInstance(b.ctx, "tool"); dtma.ErrorCode(err) != dtma.EINTERNAL {
		t.Fatalf("restart: %v", err)
	}
	b.rt.FailNext(runtimetest.StartContainer, dtma.Errorf(dtma.EINTERNAL, "start refused"))
	if _, _, err := b.a.StartInstance(b.ctx, "tool"); dtma.ErrorCode(err) != dtma.EINTERNAL {
		t.Fatalf("start: %v", err)
	}
	// Recreating fails too: the row says error and no container is left.
	b.rt.Remove("dtma-tool")
	b.rt.FailNext(runtimetest.StartContainer, dtma.Errorf(dtma.EINTERNAL, "start refused"))
	if _, _, err := b.a.StartInstance(b.ctx, "tool"); dtma.ErrorCode(err) != dtma.EINTERNAL {
		t.Fatalf("start: %v", err)
	}
	if row := b.mustRow("tool"); row.Status != dtma.StatusError {
		t.Fatalf("row %s", row.Status)
	}

	// An instance being removed refuses other operations.
	b2 := newBed(t)
	b2.seed("gone", dtma.DockerRunning, func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving })
	b2.open()
	_, _, err = b2.a.StartInstance(b2.ctx, "gone")
	wantCode(t, err, dtma.ECONFLICT)
}

// TestRemoveWaitsForRemovalInProgress: Docker answering that a removal is
// already in progress is waited out, not reported as a conflict.
func TestRemoveWaitsForRemovalInProgress(t *testing.T) {
	b := newBed(t)
	b.seed("tool", dtma.DockerRunning, nil)
	b.open()
	b.rt.FailNext(runtimetest.RemoveContainer, dtma.Errorf(dtma.ECONFLICT, "removal of container is already in progress"))
	b.rt.Update("dtma-tool", func(c *dtma.Container) { c.State = dtma.DockerRemoving })
	b.rt.OnCall(runtimetest.InspectContainer, func(string) {
		// The daemon finishes the removal it had begun.
		if len(b.rt.CallsOf(runtimetest.RemoveContainer)) > 0 {
			b.rt.Remove("dtma-tool")
		}
	})
	if err := b.a.RemoveInstance(b.ctx, "tool"); err != nil {
		t.Fatal(err)
	}
	if b.row("tool") != nil || b.rt.Container("dtma-tool") != nil {
		t.Fatal("row or container left")
	}
	// A conflict on a container that is not being removed: removed again.
	b.seed("two", dtma.DockerRunning, nil)
	b2 := b
	b2.rt.OnCall(runtimetest.InspectContainer, nil)
	b2.open()
	b2.rt.FailNext(runtimetest.RemoveContainer, dtma.Errorf(dtma.ECONFLICT, "conflict"))
	if err := b2.a.RemoveInstance(b2.ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if b2.rt.Container("dtma-two") != nil || len(b2.rt.CallsOf(runtimetest.RemoveContainer)) < 3 {
		t.Fatal("not removed on the second try")
	}
}

// TestReadPaths: list, fleet, logs and health.
func TestReadPaths(t *testing.T) {
	b := newBed(t)
	one := b.seed("one", dtma.DockerRunning, nil)
	b.seed("two", "", func(i *dtma.Instance) { i.DesiredState = dtma.DesiredStopped })
	other := b.reg.ForHost("host-2")
	foreign := registrytest.NewInstance("foreign")
	if err := other.CreateInstance(b.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	b.open()
	list, err := b.a.ListInstances(b.ctx)
	if err != nil || len(list) != 2 || list[0].Name != "one" {
		t.Fatalf("ListInstances: %d %v", len(list), err)
	}
	fleet, err := b.a.ListFleet(b.ctx)
	if err != nil || len(fleet) != 3 {
		t.Fatalf("ListFleet: %d rows %v, want this host's two and the other host's one", len(fleet), err)
	}
	b.rt.SetLogs(one.ContainerID, "a\nb\nc\n")
	rc, err := b.a.InstanceLogs(b.ctx, "one", dtma.LogOptions{Tail: 2})
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(rc)
	rc.Close()
	if string(text) != "b\nc\n" {
		t.Errorf("logs %q", text)
	}
	rc, err = b.a.InstanceLogs(b.ctx, "two", dtma.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := io.ReadAll(rc); len(text) != 0 {
		t.Errorf("an instance without a container has output %q", text)
	}
	b.rt.FailNext(runtimetest.ContainerLogs, dtma.Errorf(dtma.EUNAVAILABLE, "down"))
	_, err = b.a.InstanceLogs(b.ctx, "one", dtma.LogOptions{})
	wantCode(t, err, dtma.EUNAVAILABLE)

	b.relist()
	h := b.a.Health(b.ctx)
	if !h.DockerOK || !h.RegistryOK || h.HostID != testHost || h.LastObservedAt.IsZero() {
		t.Errorf("health %+v", h)
	}
	b.rt.SetDown(true)
	b.reg.SetFail(registrytest.Unavailable)
	h = b.a.Health(b.ctx)
	if h.DockerOK || h.RegistryOK || h.DockerError == "" || h.RegistryError == "" {
		t.Errorf("health with both down %+v", h)
	}
	_, err = b.a.ListFleet(b.ctx)
	wantCode(t, err, dtma.EUNAVAILABLE)
	if list, err := b.a.ListInstances(b.ctx); err != nil || len(list) != 2 {
		t.Errorf("reads must be served from the view while both are down: %d %v", len(list), err)
	}
	b.rt.SetDown(false)
	b.reg.SetFail(nil)
	if h := b.a.Health(b.ctx); !h.DockerOK || !h.RegistryOK {
		t.Errorf("health after both came back %+v", h)
	}
}
