package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// TestEventStreamCut runs the agent through a proxy to Docker with the
// periodic resync effectively off (1 h), so that only Docker's events and
// the relist after a reconnect can tell it anything. Events alone make it
// see a `docker stop` and `docker start`; then the proxy cuts every
// connection (the event stream among them) and refuses new ones while the
// test stops one container and removes another behind the agent's back;
// once the proxy accepts again the agent resubscribes, relists and
// converges: the stopped one is recorded exited (drift), the removed one
// is recreated.
func TestEventStreamCut(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	p := StartDockerProxy(t)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host(), Env: []string{"DTMA_RESYNC_INTERVAL=1h"}})
	// Unique names: the recreated container must get its plain name back,
	// which another run of the suite on the same daemon could hold.
	sfx := " " + uniqueSuffix()
	xName, yName := "stream stop"+sfx, "stream rm"+sfx
	x := rcDeploy(t, a, rcDeployBody(img, xName, "", nil))
	y := rcDeploy(t, a, rcDeployBody(img, yName, "", map[string]string{"ECHO": "stream"}, dtma.Port{ContainerPort: 8080}))
	rcWaitFirstRelist(t, a)

	// Events alone.
	rcStop(t, a, x.ContainerID)
	Eventually(t, 30*time.Second, "the stop seen through events", func() bool {
		got := rcMustGet(t, a, xName)
		return got.DockerStatus == "exited" && got.Drift
	})
	rcStart(t, a, x.ContainerID)
	Eventually(t, 30*time.Second, "the start seen through events", func() bool {
		got := rcMustGet(t, a, xName)
		return got.DockerStatus == "running" && !got.Drift
	})

	// Cut the stream; change things while it is down.
	p.Sever()
	rcStop(t, a, x.ContainerID)
	rcRemove(t, a, y.ContainerID)
	if got := rcMustGet(t, a, xName); got.DockerStatus != "running" {
		t.Fatalf("the agent saw the stop although it was cut off from Docker: %+v", got)
	}
	p.Restore()

	Eventually(t, 60*time.Second, "the stop seen after the reconnect", func() bool {
		got := rcMustGet(t, a, xName)
		return got.DockerStatus == "exited" && got.Drift && got.ContainerID == x.ContainerID
	})
	var now dtmahttp.Instance
	Eventually(t, 60*time.Second, "the removed container recreated after the reconnect", func() bool {
		now = rcMustGet(t, a, yName)
		return now.ContainerID != y.ContainerID && now.ContainerID != "" && now.DockerStatus == "running" && now.PendingOp == ""
	})
	if now.ContainerName != y.ContainerName || now.Ports[0].HostPort != y.Ports[0].HostPort {
		t.Fatalf("recreated as %s port %d, was %s port %d", now.ContainerName, now.Ports[0].HostPort, y.ContainerName, y.Ports[0].HostPort)
	}
	Eventually(t, 20*time.Second, "the recreated container serving", func() bool { return HTTPGet(y.Ports[0].HostPort, "/") == "stream" })
	if _, state, _, ok := rcStarted(t, a, x.ContainerID); !ok || state != "exited" {
		t.Fatalf("the agent fought the stop: container is %q (exists %v)", state, ok)
	}
	if !strings.Contains(a.Logs(), "event stream") {
		t.Fatalf("the agent never noticed its event stream was cut:\n%s", a.Logs())
	}
	if n := len(a.HostContainers()); n != 2 {
		t.Fatalf("%d containers, want 2", n)
	}
}
