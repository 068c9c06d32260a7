package e2e

import (
	"net/url"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// TestTwoAgentsOneDaemon runs two agents with different host ids on one
// Docker daemon and deploys the same instance name on both at the same
// time: both succeed (the container names are disambiguated), each lists
// only its own instance, neither adopts the other's container (not even
// when asked to), and removing the instance on one leaves the other's
// container running.
func TestTwoAgentsOneDaemon(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	b := StartAgent(t, AgentOptions{})
	name := "Shared Tool " + a.HostID // unique to this test, the same on both agents
	body := rcDeployBody(img, name, dtma.NewUUID(), map[string]string{"ECHO": "shared"}, dtma.Port{ContainerPort: 8080})

	// Deploy on both at once: the second create meets Docker's name
	// conflict while the first container is being made.
	var wg sync.WaitGroup
	res := make([]*Response, 2)
	for i, ag := range []*Agent{a, b} {
		wg.Add(1)
		go func(i int, ag *Agent) {
			defer wg.Done()
			status, data, err := rcTry(ag.URL, "POST", "/v1/instances", body, 60e9)
			if err != nil {
				status, data = 0, []byte(err.Error())
			}
			res[i] = &Response{Status: status, Body: data}
		}(i, ag)
	}
	wg.Wait()
	var ia, ib dtmahttp.Instance
	for i, r := range res {
		if r.Status != 201 {
			t.Fatalf("deploy on agent %d: status %d\n%s", i, r.Status, r.Body)
		}
	}
	res[0].Decode(t, &ia)
	res[1].Decode(t, &ib)
	if ia.ContainerName == ib.ContainerName || ia.ContainerID == ib.ContainerID {
		t.Fatalf("both agents use container %s (%s)", ia.ContainerName, ia.ContainerID)
	}
	if ia.HostID != a.HostID || ib.HostID != b.HostID {
		t.Fatalf("host ids %s, %s; want %s, %s", ia.HostID, ib.HostID, a.HostID, b.HostID)
	}

	// Each agent sees only its own, across relists.
	rcWaitRelists(t, a, 2)
	rcWaitRelists(t, b, 1)
	for _, c := range []struct {
		ag   *Agent
		want dtmahttp.Instance
	}{{a, ia}, {b, ib}} {
		list := rcList(t, c.ag)
		if len(list) != 1 || list[0].ID != c.want.ID || list[0].ContainerID != c.want.ContainerID {
			t.Fatalf("agent %s lists %+v, want only %s", c.ag.HostID, list, c.want.ContainerID)
		}
		if ids := c.ag.HostContainers(); len(ids) != 1 || ids[0] != c.want.ContainerID {
			t.Fatalf("host %s labels containers %v", c.ag.HostID, ids)
		}
	}

	// Asked to adopt the other agent's container, an agent refuses.
	r := a.Expect(200, "POST", "/v1/adopt", map[string]any{"name": "stolen " + a.HostID, "container": ib.ContainerName, "image": img})
	if got := r.JSON(t); got["action"] != "skip" {
		t.Fatalf("adopting another host's container answered %s", r.Body)
	}

	// Remove on a: b's container stays, running, and b still serves it.
	a.Expect(204, "DELETE", "/v1/instances/"+url.PathEscape(name), nil)
	if a.Inspect(ia.ContainerID) != nil {
		t.Fatalf("a's container survived its removal")
	}
	if _, state, _, ok := rcStarted(t, b, ib.ContainerID); !ok || state != "running" {
		t.Fatalf("b's container is %q (exists %v) after a removed its instance", state, ok)
	}
	// a relists with b's container on the daemon and adopts nothing.
	rcWaitRelists(t, a, 2)
	if list := rcList(t, a); len(list) != 0 {
		t.Fatalf("agent a lists %+v after removing its only instance", list)
	}
	if got := rcMustGet(t, b, name); got.ContainerID != ib.ContainerID || got.DTMAStatus != "running" {
		t.Fatalf("b shows %+v", got)
	}
	if !Serves(ib.Ports[0].HostPort, "/", "shared") {
		t.Fatalf("b's instance does not answer on its port")
	}
}
