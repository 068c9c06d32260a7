package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// TestKillBetweenIntentAndDocker kills the agent at the one moment a
// timed kill rarely hits: the intent of a stop, a start and a restart is
// recorded, and the Docker request that carries it out has left the agent
// but never reaches Docker (the proxy holds it). After a restart and one
// reconcile the operation is complete — the container stopped, started,
// restarted (a new StartedAt) — and the record is settled.
func TestKillBetweenIntentAndDocker(t *testing.T) {
	t.Parallel()
	killBetweenIntentAndDocker(t, AgentOptions{})
}

// TestKillBetweenIntentAndDockerPostgres is the same with the registry in
// PostgreSQL.
func TestKillBetweenIntentAndDockerPostgres(t *testing.T) {
	t.Parallel()
	killBetweenIntentAndDocker(t, AgentOptions{RegistryURL: pgDatabase(t)})
}

func killBetweenIntentAndDocker(t *testing.T, opts AgentOptions) {
	img := EchoImage(t)
	p := StartDockerProxy(t)
	opts.DockerHost = p.Host()
	a := StartAgent(t, opts)
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

// TestKillBetweenIntentAndDockerDeployRemove is the same for a deploy
// (the create is held: a row, no container) and a remove (the delete is
// held: a row marked removing, its container still there): after a
// restart and one reconcile the deploy runs and the remove is done.
func TestKillBetweenIntentAndDockerDeployRemove(t *testing.T) {
	t.Parallel()
	killBetweenIntentAndDockerDeployRemove(t, AgentOptions{})
}

// TestKillBetweenIntentAndDockerDeployRemovePostgres is the same with the
// registry in PostgreSQL.
func TestKillBetweenIntentAndDockerDeployRemovePostgres(t *testing.T) {
	t.Parallel()
	killBetweenIntentAndDockerDeployRemove(t, AgentOptions{RegistryURL: pgDatabase(t)})
}

func killBetweenIntentAndDockerDeployRemove(t *testing.T, opts AgentOptions) {
	img := EchoImage(t)
	p := StartDockerProxy(t)
	opts.DockerHost = p.Host()
	a := StartAgent(t, opts)
	name := "held deploy " + uniqueSuffix()
	ref := "/v1/instances/" + url.PathEscape(name)

	// Deploy: the row is written, the create never reaches Docker.
	isCreate := func(l string) bool { return strings.HasPrefix(l, "POST ") && strings.Contains(l, "/containers/create") }
	p.Hold(isCreate)
	base := a.URL
	go func() {
		_, _, _ = rcTry(base, "POST", "/v1/instances", rcDeployBody(img, name, "", map[string]string{"ECHO": "held"}, dtma.Port{ContainerPort: 8080}), 30*time.Second)
	}()
	Eventually(t, 20*time.Second, "the deploy intent recorded and its create held", func() bool {
		inst, status := rcGet(t, a, name)
		return status == 200 && inst.PendingOp == "deploy" && p.Requests(isCreate) > 0
	})
	a.Kill()
	p.Hold(nil)
	if ids := instanceContainers(t, a, name); len(ids) != 0 {
		t.Fatalf("Docker created the held container %v; the test proves nothing", ids)
	}
	since := time.Now()
	a.start()
	waitRelist(t, a, since)
	var inst dtmahttp.Instance
	Eventually(t, 30*time.Second, "the interrupted deploy running", func() bool {
		inst = rcMustGet(t, a, name)
		return inst.PendingOp == "" && inst.DockerStatus == "running" && inst.DTMAStatus == "running"
	})
	if ids := instanceContainers(t, a, name); len(ids) != 1 || ids[0] != inst.ContainerID {
		t.Fatalf("containers of the deployed instance: %v, want only %s", ids, inst.ContainerID)
	}
	Eventually(t, 20*time.Second, "the deployed tool serving", func() bool { return HTTPGet(inst.Ports[0].HostPort, "/") == "held" })

	// Remove: the row is marked, the delete never reaches Docker.
	isDelete := func(l string) bool {
		return strings.HasPrefix(l, "DELETE ") && strings.Contains(l, "/containers/"+inst.ContainerID)
	}
	p.Hold(isDelete)
	base = a.URL
	go func() { _, _, _ = rcTry(base, "DELETE", ref, nil, 30*time.Second) }()
	Eventually(t, 20*time.Second, "the remove intent recorded and its delete held", func() bool {
		got, status := rcGet(t, a, name)
		return status == 200 && got.PendingOp == "remove" && p.Requests(isDelete) > 0
	})
	a.Kill()
	p.Hold(nil)
	if a.Inspect(inst.ContainerID) == nil {
		t.Fatalf("Docker removed the container although the delete was held; the test proves nothing")
	}
	since = time.Now()
	a.start()
	waitRelist(t, a, since)
	if _, status := rcGet(t, a, name); status != 404 {
		t.Fatalf("the interrupted remove left the instance served (%d)", status)
	}
	if a.Inspect(inst.ContainerID) != nil || len(instanceContainers(t, a, name)) != 0 {
		t.Fatalf("the interrupted remove left the container")
	}
}
