package agent

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// TestClaimRules: how a relist matches containers to rows — by container
// id, by the dtma.instance-id label, by name and spec hash (a look-alike
// that ran is claimed with its ports; one that never ran is not, and the
// row's recreate removes it) — each a row, one relist, the rows and the
// containers after.
func TestClaimRules(t *testing.T) {
	type setup struct {
		row *dtma.Instance // as seeded
		c   string         // the container's id
	}
	cases := []struct {
		name    string
		arrange func(b *bed) setup
		check   func(t *testing.T, b *bed, s setup)
	}{
		{"by container id", func(b *bed) setup {
			row := b.seed("tool", dtma.DockerRunning, nil)
			return setup{row, row.ContainerID}
		}, func(t *testing.T, b *bed, s setup) {
			if r := b.mustRow("tool"); r.ContainerID != s.c || r.Status != dtma.StatusRunning {
				t.Errorf("row tracks %.12s (%s)", r.ContainerID, r.Status)
			}
		}},
		{"by the instance-id label (the row never recorded the container)", func(b *bed) setup {
			var id string
			row := b.seed("tool", "", func(i *dtma.Instance) {
				i.PendingOp, i.Status = dtma.OpDeploy, dtma.StatusDeploying
				c := b.container(i, dtma.DockerCreated)
				id = c.ID
			})
			return setup{row, id}
		}, func(t *testing.T, b *bed, s setup) {
			r := b.mustRow("tool")
			if r.ContainerID != s.c || r.Status != dtma.StatusRunning || r.PendingOp != dtma.OpNone {
				t.Errorf("row tracks %.12s (%s, %q); want the labelled container, started", r.ContainerID, r.Status, r.PendingOp)
			}
			if len(b.rt.Containers()) != 1 {
				t.Errorf("%d containers", len(b.rt.Containers()))
			}
		}},
		{"by name and spec hash, a look-alike that ran: claimed with its ports", func(b *bed) setup {
			var id string
			row := b.seed("tool", "", func(i *dtma.Instance) {
				// A container of an earlier row of the same name and spec
				// (say, a registry restored from an older backup).
				old := i.Clone()
				old.ID = dtma.NewUUID()
				old.Ports = []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31999}}
				id = b.container(old, dtma.DockerRunning).ID
			})
			return setup{row, id}
		}, func(t *testing.T, b *bed, s setup) {
			r := b.mustRow("tool")
			if r.ContainerID != s.c || r.Status != dtma.StatusRunning || r.Ports[0].HostPort != 31999 {
				t.Errorf("row tracks %.12s (%s) ports %v; want the look-alike and its port 31999", r.ContainerID, r.Status, r.Ports)
			}
			if got := b.mutating(nil); len(got) != 0 {
				t.Errorf("claiming acted on Docker: %s", fmtCalls(got))
			}
			if len(b.rows()) != 1 {
				t.Errorf("%d rows: the look-alike was adopted as well", len(b.rows()))
			}
		}},
		{"by name and spec hash, same ports, never started, row re-deployed: claimed and started", func(b *bed) setup {
			var id string
			row := b.seed("tool", "", func(i *dtma.Instance) {
				i.PendingOp, i.Status = dtma.OpDeploy, dtma.StatusDeploying
				old := i.Clone()
				old.ID = dtma.NewUUID()
				id = b.container(old, dtma.DockerCreated).ID
			})
			return setup{row, id}
		}, func(t *testing.T, b *bed, s setup) {
			r := b.mustRow("tool")
			if r.ContainerID != s.c || r.Status != dtma.StatusRunning {
				t.Errorf("row tracks %.12s (%s)", r.ContainerID, r.Status)
			}
		}},
		{"never-started look-alike with other ports: not claimed, replaced by the row's recreate", func(b *bed) setup {
			var id string
			row := b.seed("tool", "", func(i *dtma.Instance) {
				old := i.Clone()
				old.ID = dtma.NewUUID()
				old.Ports = []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31999}}
				id = b.container(old, dtma.DockerCreated).ID
			})
			return setup{row, id}
		}, func(t *testing.T, b *bed, s setup) {
			r := b.mustRow("tool")
			if b.rt.Container(s.c) != nil {
				t.Errorf("the never-started look-alike is still there")
			}
			c := b.rt.Container("dtma-tool")
			if c == nil || r.ContainerID != c.ID || c.Labels[dtma.LabelInstanceID] != s.row.ID || r.Ports[0].HostPort != s.row.Ports[0].HostPort {
				t.Errorf("want the row's own container on its own port; row %v", r.Ports)
			}
			if len(b.rows()) != 1 {
				t.Errorf("%d rows", len(b.rows()))
			}
		}},
		{"other spec hash: not claimed; the container is left alone and the row recreates elsewhere", func(b *bed) setup {
			var id string
			row := b.seed("tool", "", func(i *dtma.Instance) {
				old := i.Clone()
				old.ID = dtma.NewUUID()
				old.SpecHash = "other"
				id = b.container(old, dtma.DockerRunning).ID
			})
			return setup{row, id}
		}, func(t *testing.T, b *bed, s setup) {
			if c := b.rt.Container(s.c); c == nil || c.State != dtma.DockerRunning {
				t.Errorf("the other container was touched")
			}
			r := b.mustRow("tool")
			if r.ContainerID == s.c || r.ContainerName == "dtma-tool" {
				t.Errorf("row took a container of another spec (%s)", r.ContainerName)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			s := tc.arrange(b)
			b.open()
			b.rt.ResetCalls()
			b.relist()
			tc.check(t, b, s)
			// A second relist changes nothing more.
			before := b.rows()
			b.rt.ResetCalls()
			b.relist()
			if got := b.mutating(nil); len(got) != 0 {
				t.Errorf("second relist acted: %s", fmtCalls(got))
			}
			if after := b.rows(); len(after) != len(before) {
				t.Errorf("second relist changed the rows")
			}
		})
	}
}

// TestAdoptLabelled: containers labelled for this host that no row knows.
func TestAdoptLabelled(t *testing.T) {
	const acct = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
	spec := testSpec()
	reqPorts, _ := json.Marshal(spec.Ports)
	lab := func(b *bed, name, instanceID string) map[string]string {
		return b.rt.Labels(dtma.LabelInstance, name, dtma.LabelInstanceID, instanceID,
			dtma.LabelAccountID, strings.ToUpper(acct), dtma.LabelSpecHash, spec.Hash(),
			dtma.LabelEnvNames, "API_KEY", dtma.LabelPorts, string(reqPorts))
	}
	env := map[string]string{"API_KEY": secretValue, "PATH": "/bin"}
	ports := []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31007}}

	t.Run("running: adopted from labels and inspect data, not restarted", func(t *testing.T) {
		b := newBed(t)
		iid := dtma.NewUUID()
		id := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: lab(b, "tool", iid),
			Env: env, Ports: ports, State: dtma.DockerRunning})
		b.open()
		b.relist()
		r := b.mustRow("tool")
		if r.ID != iid || r.ContainerID != id || r.AccountToolInstanceID != acct || r.SpecHash != spec.Hash() ||
			r.DesiredState != dtma.DesiredRunning || r.Status != dtma.StatusRunning || r.Tracking != dtma.TrackLabel ||
			r.Ports[0].HostPort != 31007 || r.Spec.Ports[0].HostPort != 0 || len(r.Spec.Env) != 1 || r.Spec.Env["API_KEY"] != secretValue {
			t.Errorf("adopted row %+v", r)
		}
		if got := b.mutating(nil); len(got) != 0 {
			t.Errorf("adoption acted on Docker: %s", fmtCalls(got))
		}
	})
	t.Run("exited: adopted as desired stopped", func(t *testing.T) {
		b := newBed(t)
		b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: lab(b, "tool", "not-a-uuid"),
			Env: env, Ports: ports, State: dtma.DockerExited, StartedAt: b.clock.Now()})
		b.open()
		b.relist()
		r := b.mustRow("tool")
		if r.DesiredState != dtma.DesiredStopped || r.Status != dtma.StatusStopped || !dtma.IsUUID(r.ID) {
			t.Errorf("adopted row desired %s status %s id %q", r.DesiredState, r.Status, r.ID)
		}
	})
	t.Run("never started: removed, not adopted", func(t *testing.T) {
		b := newBed(t)
		id := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: lab(b, "tool", dtma.NewUUID()),
			Env: env, Ports: ports, State: dtma.DockerCreated})
		b.open()
		b.relist()
		if b.row("tool") != nil || b.rt.Container(id) != nil {
			t.Errorf("row %v, container %v; want neither", b.row("tool") != nil, b.rt.Container(id) != nil)
		}
	})
	t.Run("another host's container: never listed, touched or adopted", func(t *testing.T) {
		b := newBed(t)
		l := lab(b, "tool", dtma.NewUUID())
		l[dtma.LabelHost] = "host-2"
		id := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: l, State: dtma.DockerCreated})
		stopped := b.rt.AddContainer(dtma.Container{Name: "dtma-tool-2", Image: testImage, Labels: l, State: dtma.DockerExited})
		b.open()
		b.relist()
		if len(b.rows()) != 0 || b.rt.Container(id) == nil || b.rt.Container(stopped) == nil {
			t.Fatalf("another host's containers were adopted or removed")
		}
		for _, c := range b.rt.Calls() {
			if c.Arg == id || c.Arg == stopped {
				t.Errorf("the agent called %s on another host's container", c)
			}
		}
	})
	t.Run("invalid instance name: left alone", func(t *testing.T) {
		b := newBed(t)
		id := b.rt.AddContainer(dtma.Container{Name: "weird", Image: testImage, Labels: lab(b, "", dtma.NewUUID()), State: dtma.DockerRunning})
		b.open()
		b.relist()
		if len(b.rows()) != 0 || b.rt.Container(id) == nil {
			t.Fatalf("a container without a valid instance name was adopted or removed")
		}
	})
	t.Run("name already has a row: left alone", func(t *testing.T) {
		b := newBed(t)
		b.seed("tool", dtma.DockerRunning, nil)
		l := lab(b, "tool", dtma.NewUUID())
		l[dtma.LabelSpecHash] = "another"
		id := b.rt.AddContainer(dtma.Container{Name: "dtma-tool-x", Image: testImage, Labels: l, State: dtma.DockerRunning})
		b.open()
		b.relist()
		if len(b.rows()) != 1 || b.rt.Container(id) == nil {
			t.Fatalf("%d rows; the second container of a name was adopted or removed", len(b.rows()))
		}
	})
	t.Run("registry down: adopted once it answers", func(t *testing.T) {
		b := newBed(t)
		b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: lab(b, "tool", dtma.NewUUID()),
			Env: env, Ports: ports, State: dtma.DockerRunning})
		b.open()
		b.reg.SetFail(failOps(registrytest.OpCreateInstance))
		b.relist()
		b.reg.SetFail(nil)
		if b.row("tool") != nil {
			t.Fatal("adopted while the registry refused")
		}
		b.relist()
		if b.row("tool") == nil {
			t.Fatal("not adopted after the registry came back")
		}
	})
	t.Run("inspect fails: left for the next relist", func(t *testing.T) {
		b := newBed(t)
		id := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, Labels: lab(b, "tool", dtma.NewUUID()), State: dtma.DockerCreated})
		b.open()
		b.rt.Fail(runtimetest.InspectContainer, dtma.Errorf(dtma.EUNAVAILABLE, "inspect timed out"))
		b.relist()
		b.rt.Fail(runtimetest.InspectContainer, nil)
		if b.rt.Container(id) == nil {
			t.Fatal("removed without a fresh inspect")
		}
		b.rt.FailNext(runtimetest.RemoveContainer, dtma.Errorf(dtma.EUNAVAILABLE, "remove timed out"))
		b.relist()
		if b.rt.Container(id) == nil {
			t.Fatal("the remove was to fail")
		}
		b.relist()
		if b.rt.Container(id) != nil {
			t.Fatal("not removed on the next relist")
		}
	})
}

// TestTrackedByContainerID: a migrated legacy container (no labels) is
// never listed; the relist looks it up by id, records it, and recreates it
// with labels when it vanished while wanted running.
func TestTrackedByContainerID(t *testing.T) {
	b := newBed(t)
	legacy := b.rt.AddContainer(dtma.Container{Name: "Legacy-Tool", Image: testImage, State: dtma.DockerRunning,
		Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31005}}})
	b.open()
	res, err := b.a.AdoptContainer(b.ctx, dtma.AdoptRequest{Name: "Legacy Tool", Image: testImage})
	if err != nil || res.Action != "adopt" || res.Instance.Tracking != dtma.TrackContainerID || res.Instance.ContainerID != legacy {
		t.Fatalf("adopt: %+v %v", res, err)
	}
	b.rt.SetState(legacy, dtma.DockerExited)
	b.relist()
	if r := b.mustRow("Legacy Tool"); r.DockerStatus != dtma.DockerExited || !r.Drift() {
		t.Fatalf("row %s drift %v; want the exit recorded", r.DockerStatus, r.Drift())
	}
	b.rt.Remove(legacy)
	b.a.view.mu.Lock()
	b.a.view.rows[res.Instance.ID].DesiredState = dtma.DesiredRunning
	b.a.view.mu.Unlock()
	b.relist()
	r := b.mustRow("Legacy Tool")
	c := b.rt.Container(r.ContainerID)
	if c == nil || r.Tracking != dtma.TrackLabel || c.Labels[dtma.LabelInstanceID] != r.ID || c.State != dtma.DockerRunning {
		t.Fatalf("recreated: row tracking %s, container %v", r.Tracking, c)
	}
	// A failing inspect of the tracked id stops the relist with an error.
	b2 := newBed(t)
	id := b2.rt.AddContainer(dtma.Container{Name: "old", Image: testImage, State: dtma.DockerRunning})
	b2.open()
	if _, err := b2.a.AdoptContainer(b2.ctx, dtma.AdoptRequest{Name: "old", Image: testImage}); err != nil {
		t.Fatal(err)
	}
	b2.rt.FailNext(runtimetest.InspectContainer, dtma.Errorf(dtma.EUNAVAILABLE, "timeout"))
	if err := b2.a.Relist(b2.ctx); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("relist: %v", err)
	}
	_ = id
}

// TestAdoptContainer: the legacy adoption (dtma migrate) by name, its
// skips and its idempotence.
func TestAdoptContainer(t *testing.T) {
	b := newBed(t)
	legacy := b.rt.AddContainer(dtma.Container{Name: "Context7-MCP-Server-1", Image: testImage, State: dtma.DockerRunning,
		Env: map[string]string{"API_KEY": secretValue}})
	b.seed("managed", dtma.DockerRunning, nil)
	b.rt.AddContainer(dtma.Container{Name: "managed", Image: testImage, State: dtma.DockerExited})
	b.rt.AddContainer(dtma.Container{Name: "foreign-dtma", Image: testImage, State: dtma.DockerRunning,
		Labels: map[string]string{dtma.LabelHost: "host-2"}})
	b.rt.AddContainer(dtma.Container{Name: "imgdiff", Image: "other:1", State: dtma.DockerExited})
	b.rt.AddContainer(dtma.Container{Name: "spare", Image: testImage, State: dtma.DockerExited})
	b.open()
	const acct = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
	req := dtma.AdoptRequest{Name: "Context7 MCP Server-1", AccountToolInstanceID: acct, Image: testImage}

	dry := req
	dry.DryRun = true
	res, err := b.a.AdoptContainer(b.ctx, dry)
	if err != nil || res.Action != "adopt" || b.row(req.Name) != nil {
		t.Fatalf("dry run: %+v %v (row written: %v)", res, err, b.row(req.Name) != nil)
	}
	res, err = b.a.AdoptContainer(b.ctx, req)
	if err != nil || res.Action != "adopt" {
		t.Fatalf("adopt: %+v %v", res, err)
	}
	r := b.mustRow(req.Name)
	if r.ContainerID != legacy || r.Tracking != dtma.TrackContainerID || r.Status != dtma.StatusRunning || r.AccountToolInstanceID != acct {
		t.Fatalf("row %+v", r)
	}
	if got := b.mutating(nil); len(got) != 0 {
		t.Fatalf("adoption acted on Docker: %s", fmtCalls(got))
	}
	if res, err := b.a.AdoptContainer(b.ctx, req); err != nil || res.Action != "unchanged" {
		t.Fatalf("again: %+v %v", res, err)
	}
	for _, tc := range []struct {
		req  dtma.AdoptRequest
		want string
	}{
		{dtma.AdoptRequest{Name: "absent", Image: testImage}, "no container named"},
		{dtma.AdoptRequest{Name: "imgdiff", Image: testImage}, "runs image"},
		{dtma.AdoptRequest{Name: "foreign-dtma", Image: testImage}, "DTMA's labels"},
		{dtma.AdoptRequest{Name: "Context7-MCP-Server-1", Image: testImage}, "already managed as instance"},
		{dtma.AdoptRequest{Name: "managed", Image: testImage}, "already managed with another container"},
		{dtma.AdoptRequest{Name: "spare", AccountToolInstanceID: acct, Image: testImage}, "already managed as instance"},
		{dtma.AdoptRequest{Name: "x", Container: "spare", Image: testImage}, "not named after"},
	} {
		res, err := b.a.AdoptContainer(b.ctx, tc.req)
		if err != nil || res.Action != "skip" || !strings.Contains(res.Reason, tc.want) {
			t.Errorf("%+v: %+v %v; want a skip saying %q", tc.req, res, err, tc.want)
		}
	}
	for _, bad := range []dtma.AdoptRequest{
		{Name: "", Image: testImage}, {Name: "x"}, {Name: "x", Image: testImage, AccountToolInstanceID: "nope"},
		{Name: "x", Image: "Bad Image!"}, {Name: "x", Image: testImage, Container: "../x"},
	} {
		if _, err := b.a.AdoptContainer(b.ctx, bad); dtma.ErrorCode(err) != dtma.EINVALID {
			t.Errorf("%+v: %v, want invalid", bad, err)
		}
	}
	b.rt.SetDown(true)
	_, err = b.a.AdoptContainer(b.ctx, dtma.AdoptRequest{Name: "spare", Image: testImage})
	wantCode(t, err, dtma.EUNAVAILABLE)
	b.rt.SetDown(false)
	b.rt.FailNext(runtimetest.InspectContainer, dtma.Errorf(dtma.EUNAVAILABLE, "timeout"))
	_, err = b.a.AdoptContainer(b.ctx, dtma.AdoptRequest{Name: "spare", Image: testImage})
	wantCode(t, err, dtma.EUNAVAILABLE)
	b.reg.SetFail(failOps(registrytest.OpCreateInstance))
	_, err = b.a.AdoptContainer(b.ctx, dtma.AdoptRequest{Name: "spare", Image: testImage})
	wantCode(t, err, dtma.EUNAVAILABLE)
	b.reg.SetFail(nil)
	if b.row("spare") != nil {
		t.Fatal("a failed adoption left a row")
	}
}

// TestAdoptInspectOutageMarksDockerDown: every runtime call records
// Docker's health, the legacy adoption's inspect among them (it was
// missed when each call site noted health by hand); an image registry's
// failure does not mark Docker down, and Docker answering again asks the
// reconciler for a relist.
func TestAdoptInspectOutageMarksDockerDown(t *testing.T) {
	b := newBed(t)
	b.open()
	b.rt.FailNext(runtimetest.InspectContainer, dtma.Errorf(dtma.EUNAVAILABLE, "docker unavailable: inspect timed out"))
	if _, err := b.a.AdoptContainer(b.ctx, dtma.AdoptRequest{Name: "legacy", Image: testImage}); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("adopt during an inspect outage: %v, want EUNAVAILABLE", err)
	}
	b.a.health.mu.Lock()
	down := b.a.health.dockerErr
	b.a.health.mu.Unlock()
	if down == nil {
		t.Fatal("an inspect that Docker did not answer left Docker marked up")
	}
	select { // drop any earlier request
	case <-b.a.kick:
	default:
	}
	if _, err := b.a.rt.ListContainers(b.ctx); err != nil {
		t.Fatalf("list: %v", err)
	}
	select {
	case <-b.a.kick:
	default:
		t.Fatal("Docker answering again did not ask for a relist")
	}
	b.rt.SetPullError("registry.example.com/gone:1", dtma.Errorf(dtma.EUNAVAILABLE, "registry refused"))
	if _, err := b.a.rt.EnsureImage(b.ctx, "registry.example.com/gone:1", dtma.PullAlways); err == nil {
		t.Fatal("pull of a failing registry succeeded")
	}
	b.a.health.mu.Lock()
	down = b.a.health.dockerErr
	b.a.health.mu.Unlock()
	if down != nil {
		t.Fatalf("an image registry's failure marked Docker down: %v", down)
	}
}
