package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestKillBetweenIntentAndDocker kills the agent at the one moment a
// timed kill rarely hits: the intent of a stop, a start and a restart is
// recorded, and the Docker request that carries it out has left the agent
// but never reaches Docker (the proxy holds it). After a restart and one
// reconcile the operation is complete — the container stopped, started,
// restarted (a new StartedAt) — and the record is settled.
func TestKillBetweenIntentAndDocker(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	p := StartDockerProxy(t)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host()})
	name := "held op " + uniqueSuffix()
	inst := rcDeploy(t, a, rcDeployBody(img, name, "", nil))
	ref := "/v1/instances/" + url.PathEscape(name)

	for _, tc := range []struct {
		op                               string
		dockerState, desired, dtmaStatus string
		startsAgain                      bool
	}{
		{op: "stop", dockerState: "exited", desired: "stopped", dtmaStatus: "stopped"},
		{op: "start", dockerState: "running", desired: "running", dtmaStatus: "running", startsAgain: true},
		{op: "restart", dockerState: "running", desired: "running", dtmaStatus: "running", startsAgain: true},
	} {
		_, _, before, _ := rcStarted(t, a, inst.ContainerID)
		call := "/containers/" + inst.ContainerID + "/" + tc.op
		isCall := func(l string) bool { return strings.HasPrefix(l, "POST ") && strings.Contains(l, call) }
		p.Hold(isCall)
		base := a.URL
		go func() { _, _, _ = rcTry(base, "POST", ref+"/"+tc.op, nil, 30*time.Second) }() // never answered
		Eventually(t, 20*time.Second, "the "+tc.op+" intent recorded and its Docker request held", func() bool {
			return rcMustGet(t, a, name).PendingOp == tc.op && p.Requests(isCall) > 0
		})
		a.Kill()
		p.Hold(nil)
		if _, _, started, _ := rcStarted(t, a, inst.ContainerID); started != before {
			t.Fatalf("%s: Docker carried out the held request (StartedAt %s -> %s); the test proves nothing", tc.op, before, started)
		}

		since := time.Now()
		a.start()
		waitRelist(t, a, since)
		got := rcMustGet(t, a, name)
		if got.PendingOp != "" || got.DockerStatus != tc.dockerState || got.DesiredState != tc.desired ||
			got.DTMAStatus != tc.dtmaStatus || got.ContainerID != inst.ContainerID || got.Drift {
			t.Fatalf("%s interrupted before Docker saw it, after one reconcile: %+v", tc.op, got)
		}
		_, state, started, ok := rcStarted(t, a, inst.ContainerID)
		if !ok || state != tc.dockerState {
			t.Fatalf("%s: container is %q (exists %v), want %s", tc.op, state, ok, tc.dockerState)
		}
		if tc.startsAgain && started == before {
			t.Fatalf("%s: the container was not started again (StartedAt still %s)", tc.op, before)
		}
		if ids := instanceContainers(t, a, name); len(ids) != 1 {
			t.Fatalf("%s: %d containers for the instance", tc.op, len(ids))
		}
	}
}
