package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// TestDockerDown cuts the agent off from Docker (a proxy that refuses
// connections, as a dead daemon does): operations that need Docker answer
// 503 with code "unavailable" (legacy: success false) and record nothing;
// reads are served from the registry with observed_at showing when Docker
// was last seen; /v1/health reports docker_ok false; the agent keeps
// running. When Docker is back the same process recovers: health ok,
// operations succeed, the reconciler observes again.
func TestDockerDown(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	p := StartDockerProxy(t)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host()})
	pid := a.cmd.Process.Pid
	acct := dtma.NewUUID()
	one := rcDeploy(t, a, rcDeployBody(img, "down one", acct, map[string]string{"ECHO": "down"}, dtma.Port{ContainerPort: 8080}))
	rcDeploy(t, a, rcDeployBody(img, "down two", "", nil))
	a.Expect(200, "POST", "/v1/instances/down%20two/stop", nil)
	rcWaitRelists(t, a, 1)

	p.Sever()
	severedAt := time.Now().UTC()

	// Health says so.
	r := a.Do("GET", "/v1/health", nil)
	if h := r.JSON(t); r.Status != 503 || h["docker_ok"] != false || h["registry_ok"] != true {
		t.Fatalf("health with Docker down: %d %s", r.Status, r.Body)
	}

	// Operations that need Docker: 503 unavailable.
	ops := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/instances/down%20two/start", nil},
		{"POST", "/v1/instances/down%20one/stop", nil},
		{"POST", "/v1/instances/" + acct + "/restart", nil},
		{"POST", "/v1/instances", rcDeployBody(img, "down three", "", nil)},
		{"POST", "/v1/instances", rcDeployBody(img, "down one", acct, map[string]string{"ECHO": "down"}, dtma.Port{ContainerPort: 8080})},
		{"DELETE", "/v1/instances/down%20one", nil},
		{"GET", "/v1/instances/down%20one/logs", nil},
	}
	for _, op := range ops {
		r := a.Do(op.method, op.path, op.body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if r.Status == 503 {
			r.Decode(t, &e)
		}
		if r.Status != 503 || e.Error.Code != "unavailable" {
			t.Fatalf("%s %s with Docker down: %d %s; want 503 unavailable", op.method, op.path, r.Status, r.Body)
		}
	}
	for _, op := range []struct{ method, path string }{{"POST", "/tools/down%20two/start"}, {"POST", "/tools/down%20one/stop"}} {
		r := a.Do(op.method, op.path, nil)
		if m := r.JSON(t); r.Status != 503 || m["success"] != false {
			t.Fatalf("legacy %s %s with Docker down: %d %s", op.method, op.path, r.Status, r.Body)
		}
	}
	r = a.Do("POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": "down legacy"})
	if m := r.JSON(t); r.Status != 503 || m["success"] != false {
		t.Fatalf("legacy deploy with Docker down: %d %s", r.Status, r.Body)
	}

	// Reads come from the registry.
	list := rcList(t, a)
	if len(list) != 2 {
		t.Fatalf("list with Docker down: %+v", list)
	}
	for _, inst := range list {
		if inst.ObservedAt == nil || inst.ObservedAt.After(severedAt) {
			t.Fatalf("%q observed_at %v, Docker was cut off at %s", inst.Name, inst.ObservedAt, severedAt)
		}
		if inst.Transient() {
			t.Fatalf("a refused operation left %q in %s", inst.Name, inst.DTMAStatus)
		}
	}
	if got := rcMustGet(t, a, acct); got.Name != "down one" || got.DockerStatus != "running" {
		t.Fatalf("by account id with Docker down: %+v", got)
	}
	if lt := rcLegacyTool(t, a, "down two"); lt["state"] != "exited" || lt["status"] != "stopped" {
		t.Fatalf("legacy status with Docker down: %v", lt)
	}
	a.Expect(200, "GET", "/tools/down%20one/status", nil)
	if m := a.Expect(200, "GET", "/status", nil).JSON(t); m["status"] != "degraded" || m["docker_ok"] != false {
		t.Fatalf("legacy /status with Docker down: %v", m)
	}

	// The agent keeps running and keeps trying.
	Eventually(t, 60*time.Second, "the reconciler retrying", func() bool {
		return strings.Count(a.Logs(), "relist failed") >= 2
	})
	select {
	case <-a.exited:
		t.Fatalf("the agent exited with Docker down:\n%s", a.Logs())
	default:
	}
	if got := rcMustGet(t, a, "down one"); got.ObservedAt == nil || got.ObservedAt.After(severedAt) {
		t.Fatalf("observed_at advanced with Docker down: %v", got.ObservedAt)
	}

	// Docker is back: the same process recovers.
	p.Restore()
	restoredAt := time.Now().UTC()
	Eventually(t, 30*time.Second, "health ok again", func() bool {
		r := a.Do("GET", "/v1/health", nil)
		return r.Status == 200 && r.JSON(t)["docker_ok"] == true
	})
	a.Expect(200, "POST", "/v1/instances/down%20two/start", nil)
	a.Expect(200, "POST", "/v1/instances/down%20one/restart", nil)
	rcDeploy(t, a, rcDeployBody(img, "down three", "", nil))
	Eventually(t, 60*time.Second, "a relist after Docker came back", func() bool {
		return rcLastObserved(t, a).After(restoredAt)
	})
	Eventually(t, 60*time.Second, "every instance observed again", func() bool {
		for _, inst := range rcList(t, a) {
			if inst.ObservedAt == nil || !inst.ObservedAt.After(restoredAt) {
				return false
			}
		}
		return true
	})
	for _, inst := range rcList(t, a) {
		if inst.DTMAStatus != "running" || inst.DockerStatus != "running" || inst.PendingOp != "" {
			t.Fatalf("after recovery: %+v", inst)
		}
	}
	if a.cmd.Process.Pid != pid {
		t.Fatalf("the agent was restarted")
	}
	if !Serves(one.Ports[0].HostPort, "/", "down") {
		t.Fatalf("down one does not answer on its port")
	}
}

// TestDockerBackRelistsAtOnce: while Docker is down the reconciler retries
// with a growing backoff; when Docker is back and the agent notices (here:
// a health check reaches it), the reconciler relists at once instead of
// sleeping out the rest of its backoff.
func TestDockerBackRelistsAtOnce(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	p := StartDockerProxy(t)
	a := StartAgent(t, AgentOptions{DockerHost: p.Host()})
	rcDeploy(t, a, rcDeployBody(img, "back one", "", nil))
	rcWaitRelists(t, a, 1)

	p.Sever()
	// Wait until the reconciler has backed off to 4 s (its cap is 5 s).
	var retryAt time.Time
	Eventually(t, 60*time.Second, "the reconciler backing off 4s", func() bool {
		for _, line := range strings.Split(a.Logs(), "\n") {
			var rec struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
				In   string    `json:"in"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, "relist failed") && rec.In == "4s" {
				retryAt = rec.Time.Add(4 * time.Second)
				return true
			}
		}
		return false
	})
	p.Restore()
	restoredAt := time.Now().UTC()
	Eventually(t, 30*time.Second, "health ok again", func() bool {
		return a.Do("GET", "/v1/health", nil).Status == 200
	})
	var relisted time.Time
	Eventually(t, 60*time.Second, "a relist after Docker came back", func() bool {
		relisted = rcLastObserved(t, a)
		return relisted.After(restoredAt)
	})
	if !relisted.Before(retryAt) {
		t.Fatalf("the reconciler relisted at %s, when its backoff ran out (%s), not when Docker was known to be back (%s)",
			relisted.Format(time.StampMilli), retryAt.Format(time.StampMilli), restoredAt.Format(time.StampMilli))
	}
}
