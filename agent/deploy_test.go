package agent

import (
	"strings"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

func deployReq(name string) dtma.DeployRequest {
	return dtma.DeployRequest{Name: name, Spec: testSpec()}
}

// TestDeployFresh: intent, image, create with labels (no env value), start,
// outcome; a host port allocated from the range.
func TestDeployFresh(t *testing.T) {
	b := newBed(t)
	b.open()
	req := deployReq("Weather Tool")
	req.AccountToolInstanceID = "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10"
	inst, created, err := b.a.Deploy(b.ctx, req)
	if err != nil || !created {
		t.Fatalf("Deploy: created=%v err=%v", created, err)
	}
	row := b.mustRow("Weather Tool")
	c := b.rt.Container(row.ContainerID)
	if c == nil || c.State != dtma.DockerRunning || c.Name != "dtma-weather-tool" {
		t.Fatalf("container %+v, want dtma-weather-tool running", c)
	}
	if row.Status != dtma.StatusRunning || row.PendingOp != dtma.OpNone || row.ID != inst.ID ||
		row.AccountToolInstanceID != "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10" || row.Ports[0].HostPort != 31000 {
		t.Fatalf("row %+v", row)
	}
	want := map[string]string{
		dtma.LabelManaged: "true", dtma.LabelHost: testHost, dtma.LabelInstance: "Weather Tool",
		dtma.LabelInstanceID: row.ID, dtma.LabelSpecHash: row.SpecHash, dtma.LabelEnvNames: "API_KEY",
		dtma.LabelAccountID: row.AccountToolInstanceID,
	}
	for k, v := range want {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if c.Env["API_KEY"] != secretValue || c.Ports[0].HostPort != 31000 {
		t.Errorf("container env/ports not as asked: ports %v", c.Ports)
	}
	b.noSecretInLabels()
	got := b.mutating(names(c))
	if want := []string{"CreateContainer(dtma-weather-tool)", "StartContainer(dtma-weather-tool)"}; !sameStrings(got, want) {
		t.Errorf("calls %s, want %s", fmtCalls(got), fmtCalls(want))
	}
	if calls := b.rt.CallsOf(runtimetest.Ping); len(calls) != 1 {
		t.Errorf("Docker pinged %d times before the intent, want once", len(calls))
	}
	// The image is present: created first, no image check asked of Docker.
	if calls := b.rt.CallsOf(runtimetest.EnsureImage); len(calls) != 0 {
		t.Errorf("the image was checked %d times for a deploy of a present image (pull missing), want 0", len(calls))
	}
}

// TestDeployIdempotent: the same request again answers the same instance,
// created=false, creating nothing; a container stopped meanwhile is
// started; by account id too.
func TestDeployIdempotent(t *testing.T) {
	b := newBed(t)
	b.open()
	first, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
	if err != nil {
		t.Fatal(err)
	}
	b.rt.SetState(first.ContainerID, dtma.DockerExited)
	b.rt.ResetCalls()
	again, created, err := b.a.Deploy(b.ctx, deployReq("tool"))
	if err != nil || created || again.ID != first.ID || again.ContainerID != first.ContainerID {
		t.Fatalf("re-deploy: created=%v err=%v id %s vs %s", created, err, again.ID, first.ID)
	}
	if got := b.mutating(names(b.rt.Container(first.ContainerID))); !sameStrings(got, []string{"StartContainer(dtma-tool)"}) {
		t.Errorf("calls %s, want only a start", fmtCalls(got))
	}
	if c := b.rt.Container(first.ContainerID); c.State != dtma.DockerRunning {
		t.Errorf("container %s, want running", c.State)
	}
	if len(b.rows()) != 1 || len(b.rt.Containers()) != 1 {
		t.Errorf("%d rows, %d containers; want 1 and 1", len(b.rows()), len(b.rt.Containers()))
	}
}

// TestDeployRejected: bad input and conflicts answer 4xx naming the field,
// and leave no row and no container behind.
func TestDeployRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   func() dtma.DeployRequest
		code  string
		field string
	}{
		{"invalid name", func() dtma.DeployRequest { return deployReq("") }, dtma.EINVALID, "name"},
		{"other spec", func() dtma.DeployRequest {
			r := deployReq("held")
			r.AccountToolInstanceID = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
			r.Spec.Env = map[string]string{"API_KEY": "other-value"}
			return r
		}, dtma.ECONFLICT, "name"},
		{"account id of another instance", func() dtma.DeployRequest {
			r := deployReq("new")
			r.AccountToolInstanceID = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
			return r
		}, dtma.ECONFLICT, "account_tool_instance_id"},
		{"same name, other account id", func() dtma.DeployRequest {
			r := deployReq("held")
			r.AccountToolInstanceID = "7f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
			return r
		}, dtma.ECONFLICT, "account_tool_instance_id"},
		{"agent's own port on v1", func() dtma.DeployRequest {
			r := deployReq("new")
			r.Spec.Ports = []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 30000}}
			return r
		}, dtma.ECONFLICT, "ports[0].host_port"},
		{"another instance's port", func() dtma.DeployRequest {
			r := deployReq("new")
			r.Spec.Ports = []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 31000}}
			return r
		}, dtma.ECONFLICT, "ports[0].host_port"},
		{"image from a registry host that resolves to a private address", func() dtma.DeployRequest {
			r := deployReq("new")
			r.Spec.Image = "registry.internal.example/tools/x:1"
			return r
		}, dtma.EINVALID, "image"},
		{"image absent, pull policy never", func() dtma.DeployRequest {
			r := deployReq("new")
			r.Spec.Image = "registry.example.com/absent:1"
			r.PullPolicy = dtma.PullNever
			return r
		}, dtma.EINVALID, "image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			b.open()
			held := deployReq("held")
			held.AccountToolInstanceID = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
			if _, _, err := b.a.Deploy(b.ctx, held); err != nil {
				t.Fatal(err)
			}
			before := b.mustRow("held")
			_, _, err := b.a.Deploy(b.ctx, tc.req())
			wantCode(t, err, tc.code)
			if f := dtma.ErrorField(err); f != tc.field {
				t.Errorf("field %q, want %q (%v)", f, tc.field, err)
			}
			if n := len(b.rows()); n != 1 {
				t.Errorf("%d rows, want only the held one", n)
			}
			if n := len(b.rt.Containers()); n != 1 {
				t.Errorf("%d containers, want only the held one", n)
			}
			if after := b.mustRow("held"); after.UpdatedAt != before.UpdatedAt {
				t.Errorf("the held row was written")
			}
		})
	}
}

// TestDeployRemapsLegacyPort: with PortConflictRemap a port that cannot be
// had is published on one from the range; the spec keeps the request, so
// the same body again is idempotent.
func TestDeployRemapsLegacyPort(t *testing.T) {
	b := newBed(t)
	b.open()
	req := deployReq("legacy")
	req.Spec.Ports = []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 30000}}
	req.OnPortConflict = dtma.PortConflictRemap
	inst, _, err := b.a.Deploy(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Ports[0].HostPort != 31000 || inst.Spec.Ports[0].HostPort != 30000 {
		t.Fatalf("published %v, spec %v", inst.Ports, inst.Spec.Ports)
	}
	if _, created, err := b.a.Deploy(b.ctx, req); err != nil || created {
		t.Fatalf("same body again: created=%v %v", created, err)
	}
	two := deployReq("second")
	if inst2, _, err := b.a.Deploy(b.ctx, two); err != nil || inst2.Ports[0].HostPort != 31001 {
		t.Fatalf("second deploy: %v %v", inst2, err)
	}
}

// TestDeployFailureLeavesNothing: a failed deploy removes what it made —
// container, then row — whatever step failed; Docker or the registry down
// answers 503 before anything is made.
func TestDeployFailureLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arrange func(b *bed)
		code    string
		field   string
		creates int // CreateContainer calls expected (the image is absent: the first create finds that out)
	}{
		{"image cannot be pulled", func(b *bed) {
			b.rt.SetPullError("registry.example.com/new:1", dtma.Errorf(dtma.EINVALID, "image registry.example.com/new:1 cannot be pulled: manifest unknown"))
		}, dtma.EINVALID, "image", 1},
		{"registry of images unreachable", func(b *bed) {
			b.rt.SetPullError("registry.example.com/new:1", dtma.Errorf(dtma.EUNAVAILABLE, "pull: connection refused"))
		}, dtma.EUNAVAILABLE, "", 1},
		{"create fails", func(b *bed) {
			b.rt.FailNext(runtimetest.CreateContainer, dtma.Errorf(dtma.EINVALID, "bad config"))
		}, dtma.EINVALID, "", 1},
		{"start fails", func(b *bed) {
			b.rt.FailNext(runtimetest.StartContainer, dtma.Errorf(dtma.EINTERNAL, "port is already allocated"))
		}, dtma.EINTERNAL, "", 2},
		{"docker down", func(b *bed) { b.rt.SetDown(true) }, dtma.EUNAVAILABLE, "", 0},
		{"registry down", func(b *bed) { b.reg.SetFail(registrytest.Unavailable) }, dtma.EUNAVAILABLE, "", 0},
		{"registry refuses the container id", func(b *bed) {
			b.reg.SetFail(func(op string) error {
				if op == registrytest.OpUpdateInstance {
					return registrytest.Unavailable(op)
				}
				return nil
			})
		}, dtma.EUNAVAILABLE, "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			b.open()
			tc.arrange(b)
			req := deployReq("new")
			req.Spec.Image = "registry.example.com/new:1"
			_, _, err := b.a.Deploy(b.ctx, req)
			wantCode(t, err, tc.code)
			if f := dtma.ErrorField(err); f != tc.field {
				t.Errorf("field %q, want %q", f, tc.field)
			}
			b.reg.SetFail(nil)
			if rows := b.rows(); len(rows) != 0 {
				t.Errorf("row left: %s %s", rows[0].Name, rows[0].Status)
			}
			b.rt.SetDown(false)
			if cs := b.rt.Containers(); len(cs) != 0 {
				t.Errorf("container left: %s %s", cs[0].Name, cs[0].State)
			}
			if strings.HasPrefix(tc.name, "image") || strings.HasPrefix(tc.name, "registry of images") {
				b.a.health.mu.Lock()
				dockerErr := b.a.health.dockerErr
				b.a.health.mu.Unlock()
				if dockerErr != nil {
					t.Errorf("an image registry failure was taken for Docker being down: %v", dockerErr)
				}
			}
			if n := len(b.rt.CallsOf(runtimetest.CreateContainer)); n != tc.creates {
				t.Errorf("%d creates, want %d", n, tc.creates)
			}
			if list, _ := b.a.ListInstances(b.ctx); len(list) != 0 {
				t.Errorf("the view keeps %d instances", len(list))
			}
		})
	}
}

// TestDeployDockerGoneMidway: when Docker goes away after the container was
// created, the deploy cannot tell whether it exists: the row stays, marked
// removing, and the next relist (Docker back) removes container and row.
func TestDeployDockerGoneMidway(t *testing.T) {
	b := newBed(t)
	b.open()
	b.rt.OnCall(runtimetest.StartContainer, func(string) { b.rt.SetDown(true) })
	_, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
	wantCode(t, err, dtma.EUNAVAILABLE)
	row := b.mustRow("tool")
	if row.PendingOp != dtma.OpRemove || row.Status != dtma.StatusRemoving || row.LastError == "" {
		t.Fatalf("row %s pending %q error %q; want removing", row.Status, row.PendingOp, row.LastError)
	}
	if len(b.rt.Containers()) != 1 {
		t.Fatalf("the container should still exist while Docker is down")
	}
	b.rt.OnCall(runtimetest.StartContainer, nil)
	b.rt.SetDown(false)
	b.relist()
	if b.row("tool") != nil || len(b.rt.Containers()) != 0 {
		t.Fatalf("after the relist: row %v, %d containers; want neither", b.row("tool"), len(b.rt.Containers()))
	}
}

// TestDeployNameTaken: a foreign container holding the derived name pushes
// the instance to the disambiguated name; a never-started container of the
// same instance name that no row knows makes way; a container of this very
// row (a crash between create and record) is reused.
func TestDeployNameTaken(t *testing.T) {
	t.Run("foreign container", func(t *testing.T) {
		b := newBed(t)
		b.open()
		foreign := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, State: dtma.DockerRunning})
		inst, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
		if err != nil {
			t.Fatal(err)
		}
		if want := dtma.DisambiguatedContainerName(testHost, "tool"); inst.ContainerName != want || b.mustRow("tool").ContainerName != want {
			t.Fatalf("container name %s, want %s", inst.ContainerName, want)
		}
		if c := b.rt.Container(foreign); c == nil || c.State != dtma.DockerRunning {
			t.Fatalf("the foreign container was touched")
		}
	})
	t.Run("never-started leftover of the same name", func(t *testing.T) {
		b := newBed(t)
		b.open()
		left := b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, State: dtma.DockerCreated,
			Labels: b.rt.Labels(dtma.LabelInstance, "tool", dtma.LabelInstanceID, dtma.NewUUID())})
		inst, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
		if err != nil {
			t.Fatal(err)
		}
		if inst.ContainerName != "dtma-tool" || b.rt.Container(left) != nil {
			t.Fatalf("name %s, leftover still there: %v", inst.ContainerName, b.rt.Container(left) != nil)
		}
	})
	t.Run("this row's own container", func(t *testing.T) {
		b := newBed(t)
		b.open()
		// Docker finished a create the agent did not record: put the
		// container there while the image is being ensured.
		b.rt.OnCall(runtimetest.EnsureImage, func(string) {
			row := b.mustRow("tool")
			b.rt.AddContainer(dtma.Container{Name: row.ContainerName, Image: testImage, State: dtma.DockerCreated, Labels: labels(row)})
		})
		inst, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
		if err != nil {
			t.Fatal(err)
		}
		if cs := b.rt.Containers(); len(cs) != 1 || cs[0].ID != inst.ContainerID || cs[0].State != dtma.DockerRunning {
			t.Fatalf("want the one container reused and running; have %d", len(cs))
		}
	})
	t.Run("name reserved by a create in progress", func(t *testing.T) {
		b := newBed(t)
		b.open()
		// Docker says the name is taken but cannot show the holder yet.
		b.rt.FailNext(runtimetest.CreateContainer, dtma.Errorf(dtma.ECONFLICT, "name in use"))
		inst, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
		if err != nil || inst.ContainerName != "dtma-tool" {
			t.Fatalf("deploy after a reserved name: %v", err)
		}
		if n := len(b.rt.CallsOf(runtimetest.CreateContainer)); n != 2 {
			t.Fatalf("%d creates, want a retry", n)
		}
	})
	t.Run("both names foreign", func(t *testing.T) {
		b := newBed(t)
		b.open()
		b.rt.AddContainer(dtma.Container{Name: "dtma-tool", Image: testImage, State: dtma.DockerExited})
		b.rt.AddContainer(dtma.Container{Name: dtma.DisambiguatedContainerName(testHost, "tool"), Image: testImage, State: dtma.DockerExited})
		_, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
		wantCode(t, err, dtma.ECONFLICT)
		if b.row("tool") != nil || len(b.rt.Containers()) != 2 {
			t.Fatalf("a failed deploy left a row or a container")
		}
		if !strings.Contains(err.Error(), "does not manage") {
			t.Errorf("error %q should say the name is held by a container DTMA does not manage", err)
		}
	})
}

// TestDeployWhileRemoving: a re-deploy of an instance being removed is a
// conflict, not a second container.
func TestDeployWhileRemoving(t *testing.T) {
	b := newBed(t)
	b.seed("tool", dtma.DockerRunning, func(i *dtma.Instance) { i.PendingOp, i.Status = dtma.OpRemove, dtma.StatusRemoving })
	b.open()
	_, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
	wantCode(t, err, dtma.ECONFLICT)
	if n := len(b.rt.CallsOf(runtimetest.CreateContainer)); n != 0 {
		t.Fatalf("%d creates", n)
	}
}
