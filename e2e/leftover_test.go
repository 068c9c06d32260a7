package e2e

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// A deploy interrupted by a crash can leave a container of the instance's
// name and spec that no record knows, published on other host ports than
// the record's (each attempt allocated its own). These tests build that
// state by hand while the agent is down: the record keeps allocated port P,
// its container is gone, and a look-alike container (same name, labels and
// spec hash, another instance id) publishes the tool on port Q.

// leftoverSetup deploys an instance with an allocated port, kills the
// agent, removes the instance's container and creates the look-alike on a
// fresh port, started or not. It returns the instance, the look-alike's id
// and its port.
func leftoverSetup(t *testing.T, a *Agent, name, echo string, start bool) (dtmahttp.Instance, string, int) {
	t.Helper()
	ctx := context.Background()
	img := EchoImage(t)
	r := a.Expect(201, "POST", "/v1/instances", rcDeployBody(img, name, "", map[string]string{"ECHO": echo}, dtma.Port{ContainerPort: 8080}))
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	if len(inst.Ports) != 1 || inst.Ports[0].HostPort == 0 {
		t.Fatalf("deploy did not allocate a port: %s", r.Body)
	}
	orig := a.Inspect(inst.ContainerID)
	if orig == nil {
		t.Fatalf("container %s of %q is missing", inst.ContainerID, name)
	}
	a.Kill()
	rcRemove(t, a, inst.ContainerID)

	labels := map[string]string{}
	for k, v := range orig.Container.Config.Labels {
		labels[k] = v
	}
	labels[dtma.LabelInstanceID] = dtma.NewUUID() // an earlier attempt's record, long gone
	q := freePort(t)
	port, _ := network.PortFrom(8080, network.TCP)
	res, err := a.Docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: strings.TrimPrefix(orig.Container.Name, "/"),
		Config: &container.Config{
			Image:        img,
			Env:          []string{"ECHO=" + echo},
			Labels:       labels,
			ExposedPorts: network.PortSet{port: struct{}{}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(q)}}},
		},
	})
	if err != nil {
		t.Fatalf("create look-alike of %q: %v", name, err)
	}
	if start {
		rcStart(t, a, res.ID)
		Eventually(t, 20*time.Second, "the look-alike serving", func() bool { return HTTPGet(q, "/") == echo })
	}
	return inst, res.ID, q
}

// instanceContainers returns the ids of the host's containers labelled
// for the instance name.
func instanceContainers(t *testing.T, a *Agent, name string) []string {
	t.Helper()
	var ids []string
	for _, c := range rcContainers(t, a.Docker, "dtma.host="+a.HostID, dtma.LabelInstance+"="+name) {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestLeftoverThatRanIsClaimedWithItsPorts: a look-alike that has run is
// where the tool is really served; the record claims it and takes its
// port instead of creating a second container, and keeps it across a
// restart.
func TestLeftoverThatRanIsClaimedWithItsPorts(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	name := "Leftover Ran " + uniqueSuffix()
	inst, lookalike, q := leftoverSetup(t, a, name, "ran", true)

	since := time.Now()
	a.start()
	waitRelist(t, a, since)
	for round := 1; round <= 2; round++ {
		got := rcMustGet(t, a, name)
		if got.ID != inst.ID || got.ContainerID != lookalike || got.DockerStatus != "running" {
			t.Fatalf("round %d: record %+v, want id %s on the look-alike %s, running", round, got, inst.ID, lookalike)
		}
		if len(got.Ports) != 1 || got.Ports[0].HostPort != q {
			t.Errorf("round %d: record ports %+v, want host port %d (where the container publishes)", round, got.Ports, q)
		}
		if ids := instanceContainers(t, a, name); len(ids) != 1 || ids[0] != lookalike {
			t.Errorf("round %d: containers of %q: %v, want only the look-alike %s", round, name, ids, lookalike)
		}
		if !Serves(got.Ports[0].HostPort, "/", "ran") {
			t.Errorf("round %d: the tool does not answer on its recorded port %d", round, got.Ports[0].HostPort)
		}
		since = time.Now()
		a.Restart()
		waitRelist(t, a, since)
	}
}

// TestLeftoverNeverStartedMakesWay: a look-alike that never ran is a dead
// attempt; the record's container is created again under its own name
// and port, and the look-alike is gone.
func TestLeftoverNeverStartedMakesWay(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	name := "Leftover Never " + uniqueSuffix()
	inst, lookalike, _ := leftoverSetup(t, a, name, "never", false)
	p := inst.Ports[0].HostPort

	since := time.Now()
	a.start()
	waitRelist(t, a, since)
	var got dtmahttp.Instance
	Eventually(t, 30*time.Second, name+" running again", func() bool {
		got = rcMustGet(t, a, name)
		return got.DockerStatus == "running" && got.PendingOp == "" && got.ContainerID != ""
	})
	if got.ID != inst.ID || got.ContainerName != inst.ContainerName || got.ContainerID == lookalike {
		t.Errorf("record %+v, want id %s, container name %s, a new container", got, inst.ID, inst.ContainerName)
	}
	if len(got.Ports) != 1 || got.Ports[0].HostPort != p {
		t.Errorf("record ports %+v, want the allocated host port %d", got.Ports, p)
	}
	if a.Inspect(lookalike) != nil {
		t.Errorf("the never-started look-alike %s is still there", lookalike)
	}
	if ids := instanceContainers(t, a, name); len(ids) != 1 || ids[0] != got.ContainerID {
		t.Errorf("containers of %q: %v, want only %s", name, ids, got.ContainerID)
	}
	Eventually(t, 20*time.Second, name+" serving on its recorded port", func() bool { return HTTPGet(p, "/") == "never" })
}
