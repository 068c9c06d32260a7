package e2e

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// TestDriftRemovedContainerRecreated: `docker rm -f` of a running
// instance's container behind the agent's back makes the agent recreate it
// from the stored spec, with the same container name and the same host
// port (requested or allocated), serving again.
func TestDriftRemovedContainerRecreated(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	fixed := freePort(t)
	insts := []dtmahttp.Instance{
		rcDeploy(t, a, rcDeployBody(img, "drift rm fixed "+uniqueSuffix(), "", map[string]string{"ECHO": "fixed"}, dtma.Port{ContainerPort: 8080, HostPort: fixed})),
		rcDeploy(t, a, rcDeployBody(img, "drift rm auto "+uniqueSuffix(), "", map[string]string{"ECHO": "auto"}, dtma.Port{ContainerPort: 8080})),
	}
	want := []string{"fixed", "auto"}
	for _, inst := range insts {
		rcRemove(t, a, inst.ContainerID)
	}
	for i, old := range insts {
		var now dtmahttp.Instance
		Eventually(t, 60*time.Second, old.Name+" recreated", func() bool {
			now = rcMustGet(t, a, old.Name)
			return now.ContainerID != "" && now.ContainerID != old.ContainerID &&
				now.DTMAStatus == "running" && now.DockerStatus == "running" && now.PendingOp == ""
		})
		res := a.Inspect(now.ContainerID)
		if res == nil {
			t.Fatalf("recreated container %s of %q does not exist", now.ContainerID, old.Name)
		}
		c := res.Container
		if c.Name != "/"+old.ContainerName || now.ContainerName != old.ContainerName {
			t.Fatalf("%q recreated as %s (recorded %s), was %s", old.Name, c.Name, now.ContainerName, old.ContainerName)
		}
		if len(now.Ports) != 1 || now.Ports[0].HostPort != old.Ports[0].HostPort {
			t.Fatalf("%q recreated with ports %+v, was %+v", old.Name, now.Ports, old.Ports)
		}
		var published []string
		for _, bs := range c.HostConfig.PortBindings {
			for _, b := range bs {
				published = append(published, b.HostPort)
			}
		}
		if len(published) != 1 || published[0] != strconv.Itoa(old.Ports[0].HostPort) {
			t.Fatalf("%q's new container publishes %v, want %d", old.Name, published, old.Ports[0].HostPort)
		}
		if cs := rcContainers(t, a.Docker, "dtma.host="+a.HostID, dtma.LabelInstance+"="+old.Name); len(cs) != 1 {
			t.Fatalf("%q has %d containers", old.Name, len(cs))
		}
		Eventually(t, 20*time.Second, old.Name+" serving again", func() bool { return HTTPGet(old.Ports[0].HostPort, "/") == want[i] })
	}
	if insts[0].Ports[0].HostPort != fixed {
		t.Fatalf("fixed port %d recorded as %d", fixed, insts[0].Ports[0].HostPort)
	}
}

// TestDriftStoppedBehindBack: `docker stop` behind the agent's back is
// recorded (docker_status exited, drift true, on v1 and the legacy status)
// and not fought: the container is still exited after several resyncs.
// `docker start` behind its back shows it running again. Observed fields
// are written to the registry only when they change: across resyncs with
// nothing new, the row's updated_at stays the same (while observed_at
// advances); a change in Docker does write it.
func TestDriftStoppedBehindBack(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	inst := rcDeploy(t, a, rcDeployBody(img, "drift stop", "", map[string]string{"ECHO": "drift"}, dtma.Port{ContainerPort: 8080}))

	// Settled and running — its health too (the default tcp check's first
	// verdict is observed state, written once) — resyncs write nothing.
	Eventually(t, 60*time.Second, "the health verdict recorded", func() bool {
		got := rcMustGet(t, a, "drift stop")
		return got.Health != nil && got.Health.State == "healthy"
	})
	rcWaitRelists(t, a, 1)
	u0, st, ok := rcRegistryRow(t, a, inst.ID)
	if !ok || st != "running" {
		t.Fatalf("registry row: exists %v, docker_status %q", ok, st)
	}
	api0 := rcMustGet(t, a, "drift stop")
	rcWaitRelists(t, a, 3)
	u1, _, _ := rcRegistryRow(t, a, inst.ID)
	api1 := rcMustGet(t, a, "drift stop")
	if u1 != u0 || !api1.UpdatedAt.Equal(api0.UpdatedAt) {
		t.Fatalf("nothing changed, yet the row was written: updated_at %d -> %d (API %s -> %s)", u0, u1, api0.UpdatedAt, api1.UpdatedAt)
	}
	if api0.ObservedAt == nil || api1.ObservedAt == nil || !api1.ObservedAt.After(*api0.ObservedAt) {
		t.Fatalf("observed_at did not advance across resyncs: %v -> %v", api0.ObservedAt, api1.ObservedAt)
	}

	// docker stop behind its back: recorded as exited, shown as drift.
	rcStop(t, a, inst.ContainerID)
	var got dtmahttp.Instance
	Eventually(t, 30*time.Second, "the stop observed", func() bool {
		got = rcMustGet(t, a, "drift stop")
		return got.DockerStatus == "exited" && got.Drift
	})
	if got.DesiredState != "running" || got.DTMAStatus != "stopped" || got.PendingOp != "" || got.ContainerID != inst.ContainerID {
		t.Fatalf("after docker stop: %+v", got)
	}
	Eventually(t, 30*time.Second, "the stop written to the registry", func() bool {
		u, st, _ := rcRegistryRow(t, a, inst.ID)
		return st == "exited" && u > u1
	})
	legacy := rcLegacyTool(t, a, "drift stop")
	if legacy["state"] != "exited" || legacy["status"] != "stopped" || legacy["drift"] != true {
		t.Fatalf("legacy status after docker stop: %v", legacy)
	}

	// Not fought, and not rewritten while nothing changes.
	u2, _, _ := rcRegistryRow(t, a, inst.ID)
	rcWaitRelists(t, a, 3)
	if _, state, _, ok := rcStarted(t, a, inst.ContainerID); !ok || state != "exited" {
		t.Fatalf("the agent fought a docker stop: container is %q (exists %v)", state, ok)
	}
	if got = rcMustGet(t, a, "drift stop"); got.DockerStatus != "exited" || !got.Drift {
		t.Fatalf("after resyncs: %+v", got)
	}
	if u3, _, _ := rcRegistryRow(t, a, inst.ID); u3 != u2 {
		t.Fatalf("drifted row rewritten without a change: updated_at %d -> %d", u2, u3)
	}

	// docker start behind its back: running again, no drift.
	rcStart(t, a, inst.ContainerID)
	Eventually(t, 30*time.Second, "the start observed", func() bool {
		got = rcMustGet(t, a, "drift stop")
		return got.DockerStatus == "running" && !got.Drift && got.DTMAStatus == "running"
	})
	if got.ContainerID != inst.ContainerID {
		t.Fatalf("container changed from %s to %s", inst.ContainerID, got.ContainerID)
	}
	Eventually(t, 20*time.Second, "serving again", func() bool { return HTTPGet(inst.Ports[0].HostPort, "/") == "drift" })
}

// rcLegacyTool returns the legacy GET /tools/status element for name.
func rcLegacyTool(t testing.TB, a *Agent, name string) map[string]any {
	t.Helper()
	var body struct {
		ToolInstances []map[string]any `json:"tool_instances"`
	}
	a.Expect(200, "GET", "/tools/status", nil).Decode(t, &body)
	for _, ti := range body.ToolInstances {
		if ti["instance_name_on_toolbox"] == name {
			return ti
		}
	}
	t.Fatalf("legacy /tools/status does not list %q: %+v", name, body.ToolInstances)
	return nil
}

// TestRemovedStayRemoved removes twenty instances from four clients at once
// while the reconciler relists (every removal's events ask for one): no
// removed instance comes back, neither as a record rebuilt from a container
// the relist listed just before its removal, nor as a recreated container.
func TestRemovedStayRemoved(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	const n = 20
	for i := 0; i < n; i++ {
		rcDeploy(t, a, rcDeployBody(img, fmt.Sprintf("gone %d", i), "", nil))
	}
	base := a.URL
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				statuses[i], _, _ = rcTry(base, "DELETE", "/v1/instances/"+url.PathEscape(fmt.Sprintf("gone %d", i)), nil, time.Minute)
			}
		}(w)
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 204 {
			t.Fatalf("DELETE gone %d: %d", i, s)
		}
	}
	rcWaitRelists(t, a, 3)
	if list := rcList(t, a); len(list) != 0 {
		names := []string{}
		for _, inst := range list {
			names = append(names, inst.Name+" ("+inst.DTMAStatus+")")
		}
		t.Fatalf("%d removed instances came back: %v", len(list), names)
	}
	if c := a.HostContainers(); len(c) != 0 {
		t.Fatalf("%d containers left after removing every instance", len(c))
	}
}

// TestDriftRecreateRetries: a container removed while the agent was down
// is recreated when the agent starts; when that fails (its host port is
// taken by another process) the instance shows the error, and the agent
// keeps retrying (with backoff) until the port is free again, then serves
// on the same port.
func TestDriftRecreateRetries(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	port := freePort(t)
	// A name of this run's own: the recreate keeps its container name only
	// while no other agent's container (another suite on this daemon) holds it.
	name := "retry me " + uniqueSuffix()
	inst := rcDeploy(t, a, rcDeployBody(img, name, "", map[string]string{"ECHO": "retried"}, dtma.Port{ContainerPort: 8080, HostPort: port}))
	a.Kill()
	rcRemove(t, a, inst.ContainerID)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("hold port %d: %v", port, err)
	}
	defer l.Close()
	a.start()
	var got dtmahttp.Instance
	Eventually(t, 60*time.Second, "the failed recreate shown", func() bool {
		got = rcMustGet(t, a, name)
		return got.DTMAStatus == "error" && got.LastError != nil
	})
	t.Logf("while the port is taken: %s / %s: %s", got.DTMAStatus, got.DockerStatus, *got.LastError)
	if got.DesiredState != "running" || got.Drift != true {
		t.Fatalf("failed recreate: %+v", got)
	}
	l.Close()
	Eventually(t, 90*time.Second, "recreated once the port is free", func() bool {
		got = rcMustGet(t, a, name)
		return got.DTMAStatus == "running" && got.DockerStatus == "running" && got.PendingOp == ""
	})
	if got.Ports[0].HostPort != port || got.ContainerName != inst.ContainerName {
		t.Fatalf("recreated as %+v", got)
	}
	Eventually(t, 20*time.Second, "serving again", func() bool { return HTTPGet(port, "/") == "retried" })
	if cs := rcContainers(t, a.Docker, "dtma.host="+a.HostID); len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
}
