package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestQuietRelistInspectsNothing: on a host where nothing changes, a
// periodic relist is one list call: no container is inspected, except by
// the full relist that comes once every ten (the agent's fullInspectEvery).
// The agent reaches Docker through the proxy, which sees every request
// line it sends.
func TestQuietRelistInspectsNothing(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	p := StartDockerProxy(t)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host(), Env: []string{"DTMA_RESYNC_INTERVAL=1s"}})
	var ids []string
	for _, name := range []string{"quiet one", "quiet two", "quiet three"} {
		name += " " + uniqueSuffix()
		ids = append(ids, rcDeploy(t, a, rcDeployBody(img, name, "", nil)).ContainerID)
	}
	rcWaitFirstRelist(t, a)
	lists := func() int {
		return p.Requests(func(l string) bool { return strings.HasPrefix(l, "GET ") && strings.Contains(l, "/containers/json") })
	}
	inspects := func() int {
		return p.Requests(func(l string) bool {
			for _, id := range ids {
				if strings.HasPrefix(l, "GET ") && strings.Contains(l, "/containers/"+id+"/json") {
					return true
				}
			}
			return false
		})
	}
	// Let the deploys' own events settle, then watch a window of about
	// five resync intervals: shorter than ten, so at most one of its
	// relists is a full one.
	time.Sleep(2 * time.Second) // an observation window, not an assertion
	l0, i0 := lists(), inspects()
	time.Sleep(5 * time.Second)
	l1, i1 := lists(), inspects()
	if l1-l0 < 3 {
		t.Fatalf("only %d relists in the window; the test measured nothing", l1-l0)
	}
	if i1-i0 > len(ids) {
		t.Errorf("%d relists inspected containers %d times; a quiet host needs at most one full relist's %d", l1-l0, i1-i0, len(ids))
	}

}
