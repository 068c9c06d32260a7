package agent

import (
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// TestReconcileTable turns every row of the reconcile table in
// docs/ARCHITECTURE.md ("A Docker event") into a case: a registry row and
// its container (or none), one full relist, then the row, the container and
// the calls that changed containers. To add a row to the table, add a case
// here: seed the row (mod sets the pending op or desired state), set the
// container's state, and say what the relist must leave and do.
func TestReconcileTable(t *testing.T) {
	cases := []struct {
		name string
		// state of the container before the relist ("" = none).
		state dtma.DockerState
		mod   func(*dtma.Instance)
		// behind changes the container behind the agent's back after
		// the row was written.
		behind func(b *bed, c *dtma.Container)

		wantRow       bool // false: the row must be gone
		wantStatus    dtma.Status
		wantDocker    dtma.DockerState
		wantDesired   dtma.DesiredState
		wantDrift     bool
		wantContainer dtma.DockerState // "" = no container of that name
		wantCalls     []string         // mutating calls, container ids as "c"
	}{
		{
			name: "no pending op, present: observed state recorded, drift shown not fought", state: dtma.DockerRunning,
			behind:  func(b *bed, c *dtma.Container) { b.rt.SetState(c.ID, dtma.DockerExited) },
			wantRow: true, wantStatus: dtma.StatusStopped, wantDocker: dtma.DockerExited, wantDesired: dtma.DesiredRunning,
			wantDrift: true, wantContainer: dtma.DockerExited, wantCalls: nil,
		},
		{
			name: "no pending op, present and as recorded: nothing to do", state: dtma.DockerRunning,
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning,
		},
		{
			name: "pending deploy, present (created): started and settled", state: dtma.DockerCreated,
			mod: func(i *dtma.Instance) {
				i.PendingOp, i.Status, i.DesiredState = dtma.OpDeploy, dtma.StatusDeploying, dtma.DesiredRunning
			},
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"StartContainer(c)"},
		},
		{
			name: "pending start, present (exited): started and settled", state: dtma.DockerExited,
			mod: func(i *dtma.Instance) {
				i.PendingOp, i.Status, i.DesiredState = dtma.OpStart, dtma.StatusStarting, dtma.DesiredRunning
			},
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"StartContainer(c)"},
		},
		{
			name: "pending start, present and running: settled without a call", state: dtma.DockerRunning,
			mod:     func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpStart, dtma.StatusStarting },
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning,
		},
		{
			name: "pending restart, running since before the intent: restarted", state: dtma.DockerRunning,
			mod:     func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRestart, dtma.StatusRestarting },
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"RestartContainer(c)"},
		},
		{
			name: "pending restart, started after the intent: not restarted again", state: dtma.DockerRunning,
			mod: func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRestart, dtma.StatusRestarting },
			behind: func(b *bed, c *dtma.Container) {
				// The registry stamps the intent with the real clock.
				b.rt.Update(c.ID, func(c *dtma.Container) { c.StartedAt = time.Now().Add(time.Minute) })
			},
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning,
		},
		{
			name: "pending restart, not running: started", state: dtma.DockerExited,
			mod: func(i *dtma.Instance) {
				i.PendingOp, i.Status, i.DesiredState = dtma.OpRestart, dtma.StatusRestarting, dtma.DesiredRunning
			},
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"StartContainer(c)"},
		},
		{
			name: "pending stop, present and running: stopped and settled", state: dtma.DockerRunning,
			mod: func(i *dtma.Instance) {
				i.PendingOp, i.Status, i.DesiredState = dtma.OpStop, dtma.StatusStopping, dtma.DesiredStopped
			},
			wantRow: true, wantStatus: dtma.StatusStopped, wantDocker: dtma.DockerExited, wantDesired: dtma.DesiredStopped,
			wantContainer: dtma.DockerExited, wantCalls: []string{"StopContainer(c)"},
		},
		{
			name: "pending stop, present and stopped: settled without a call", state: dtma.DockerExited,
			mod:     func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpStop, dtma.StatusStopping },
			wantRow: true, wantStatus: dtma.StatusStopped, wantDocker: dtma.DockerExited, wantDesired: dtma.DesiredStopped,
			wantContainer: dtma.DockerExited,
		},
		{
			name: "pending remove, present: container removed, then the row", state: dtma.DockerRunning,
			mod:       func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving },
			wantRow:   false,
			wantCalls: []string{"RemoveContainer(c)"},
		},
		{
			name:    "pending remove, gone: row deleted",
			mod:     func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving },
			wantRow: false,
		},
		{
			name: "pending remove, container removed behind the agent: row deleted", state: dtma.DockerExited,
			mod:     func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving },
			behind:  func(b *bed, c *dtma.Container) { b.rt.Remove(c.ID) },
			wantRow: false,
		},
		{
			name: "desired running, gone: recreated from the stored spec (same name, same ports)", state: dtma.DockerRunning,
			behind:  func(b *bed, c *dtma.Container) { b.rt.Remove(c.ID) },
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"CreateContainer(dtma-tool)", "StartContainer(new)"},
		},
		{
			name:    "desired running, never had a container: created",
			wantRow: true, wantStatus: dtma.StatusRunning, wantDocker: dtma.DockerRunning, wantDesired: dtma.DesiredRunning,
			wantContainer: dtma.DockerRunning, wantCalls: []string{"CreateContainer(dtma-tool)", "StartContainer(new)"},
		},
		{
			name: "desired stopped, gone: marked missing", state: dtma.DockerExited,
			behind:  func(b *bed, c *dtma.Container) { b.rt.Remove(c.ID) },
			wantRow: true, wantStatus: dtma.StatusMissing, wantDocker: dtma.DockerMissing, wantDesired: dtma.DesiredStopped,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			seeded := b.seed("tool", tc.state, func(i *dtma.Instance) {
				if tc.mod != nil {
					tc.mod(i)
				}
			})
			old := b.rt.Container(seeded.ContainerName)
			if tc.behind != nil {
				tc.behind(b, old)
			}
			b.open()
			b.rt.ResetCalls()
			b.relist()

			row := b.row("tool")
			if !tc.wantRow {
				if row != nil {
					t.Fatalf("row still there: status %s, pending %q", row.Status, row.PendingOp)
				}
				if v, _ := b.a.FindInstance(b.ctx, "tool"); v != nil {
					t.Fatalf("the view still has the row")
				}
			} else {
				if row == nil {
					t.Fatal("row gone")
				}
				if row.Status != tc.wantStatus || row.DockerStatus != tc.wantDocker || row.DesiredState != tc.wantDesired ||
					row.PendingOp != dtma.OpNone || row.Drift() != tc.wantDrift {
					t.Errorf("row: status %s docker %s desired %s pending %q drift %v; want %s %s %s, no op, drift %v",
						row.Status, row.DockerStatus, row.DesiredState, row.PendingOp, row.Drift(),
						tc.wantStatus, tc.wantDocker, tc.wantDesired, tc.wantDrift)
				}
				view, err := b.a.FindInstance(b.ctx, "tool")
				if err != nil || view.Status != row.Status || view.ContainerID != row.ContainerID {
					t.Errorf("view %+v disagrees with the registry row (%s, %s): %v", view, row.Status, row.ContainerID, err)
				}
			}
			c := b.rt.Container(seeded.ContainerName)
			switch {
			case tc.wantContainer == "" && c != nil:
				t.Errorf("container %s left in state %s, want none", c.Name, c.State)
			case tc.wantContainer != "" && c == nil:
				t.Errorf("no container, want one %s", tc.wantContainer)
			case c != nil:
				if c.State != tc.wantContainer {
					t.Errorf("container %s, want %s", c.State, tc.wantContainer)
				}
				if row != nil && row.ContainerID != c.ID {
					t.Errorf("row tracks container %.12s, the container is %.12s", row.ContainerID, c.ID)
				}
				if c.Labels[dtma.LabelInstanceID] != seeded.ID || !sameHostPorts(c.Ports, seeded.Ports) {
					t.Errorf("container labels %v ports %v: want the row's id and ports %v", c.Labels, c.Ports, seeded.Ports)
				}
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
			b.noSecretInLabels()
		})
	}
}
