package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// rcWaitFirstRelist waits until a freshly started agent has finished its
// first reconcile (health's last_observed_at is set).
func rcWaitFirstRelist(t testing.TB, a *Agent) {
	t.Helper()
	Eventually(t, 60*time.Second, "the first relist after start", func() bool {
		return !rcLastObserved(t, a).IsZero()
	})
}

// rcCheckConsistent asserts the crash-safety invariants: no record in an
// intermediate state, no container of this host without a record, never
// two containers for one instance. It returns the instances.
//
// Docker finishes a create whose client was killed, and may do so after the
// restarted agent's first relist has begun; such a container shows up a
// moment later, its create event triggers another relist, and that relist
// removes it (it never ran). So the invariants are checked as they settle:
// they must hold within a few relists, and a violation that persists fails.
func rcCheckConsistent(t testing.TB, a *Agent) []dtmahttp.Instance {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for pass := 1; ; pass++ {
		list, problems := rcConsistency(t, a)
		if len(problems) == 0 {
			if pass > 1 {
				t.Logf("invariants held after %d checks (a late create settled)", pass)
			}
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s\nagent log:\n%s", strings.Join(problems, "\n"), a.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func rcConsistency(t testing.TB, a *Agent) ([]dtmahttp.Instance, []string) {
	list := rcList(t, a)
	var problems []string
	ids := map[string]dtmahttp.Instance{}
	for _, inst := range list {
		if inst.Transient() {
			problems = append(problems, fmt.Sprintf("instance %q is stuck in %s (pending %q) after a reconcile", inst.Name, inst.DTMAStatus, inst.PendingOp))
		}
		ids[inst.ID] = inst
	}
	byContainer := map[string]dtmahttp.Instance{}
	for _, inst := range list {
		if inst.ContainerID != "" {
			byContainer[inst.ContainerID] = inst
		}
	}
	perInstance := map[string]int{}
	for _, c := range rcContainers(t, a.Docker, "dtma.host="+a.HostID) {
		iid := c.Labels[dtma.LabelInstanceID]
		_, byID := ids[iid]
		// A record also knows a container by its id: a row that lost its
		// container may claim an identical one left for its name (same
		// spec hash) instead of creating a second.
		if _, byCID := byContainer[c.ID]; !byID && !byCID {
			problems = append(problems, fmt.Sprintf("container %s (instance %q, id %s, state %s) has no record", c.ID[:12], c.Labels[dtma.LabelInstance], iid, c.State))
		}
		perInstance[c.Labels[dtma.LabelInstance]]++
	}
	for name, n := range perInstance {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("instance %q has %d containers", name, n))
		}
	}
	return list, problems
}

// TestCrashDeployStorm kills the agent (SIGKILL) over and over while
// deploys and removes of six instances race with it, then re-sends every
// deploy: each answers 2xx, each instance has exactly one running
// container, every container has a record and no record is left in an
// intermediate state.
func TestCrashDeployStorm(t *testing.T) {
	t.Parallel()
	crashDeployStorm(t, AgentOptions{})
}

// TestCrashDeployStormPostgres is the same storm with the registry in
// PostgreSQL: the crash-safety guarantees hold on either store.
func TestCrashDeployStormPostgres(t *testing.T) {
	t.Parallel()
	crashDeployStorm(t, AgentOptions{RegistryURL: pgDatabase(t)})
}

func crashDeployStorm(t *testing.T, opts AgentOptions) {
	img := EchoImage(t)
	a := StartAgent(t, opts)
	base := a.URL

	const n = 6
	bodies := make([]map[string]any, n)
	for i := range bodies {
		bodies[i] = rcDeployBody(img, fmt.Sprintf("Storm Tool %d", i), dtma.NewUUID(),
			map[string]string{"ECHO": fmt.Sprintf("storm-%d", i)}, dtma.Port{ContainerPort: 8080})
	}

	// Six workers, one per instance, deploy (and now and then remove) in a
	// loop. While paused they send nothing; inflight counts their requests.
	stop := make(chan struct{})
	var paused atomic.Bool
	var inflight atomic.Int32
	var wg sync.WaitGroup
	var ok2xx, connErrs atomic.Int64
	send := func(method, path string, body any) {
		inflight.Add(1)
		defer inflight.Add(-1)
		if paused.Load() {
			return
		}
		status, _, err := rcTry(base, method, path, body, 30*time.Second)
		switch {
		case err != nil:
			connErrs.Add(1)
			time.Sleep(20 * time.Millisecond) // the agent is down; try again soon
		case method == "POST" && status/100 == 2:
			ok2xx.Add(1)
		}
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ref := "/v1/instances/" + url.PathEscape(bodies[i]["name"].(string))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if paused.Load() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				send("POST", "/v1/instances", bodies[i])
				if k%3 == 1 { // remove now and then, so creates keep racing with kills
					send("DELETE", ref, nil)
				}
			}
		}(i)
	}

	// Kill at varying delays. After every other kill the workers pause
	// until the restarted agent has finished its first reconcile, and the
	// crash-safety invariants are checked then; after the others the
	// workers race with the restarted agent's reconcile.
	delays := []time.Duration{40, 150, 90, 300, 20, 220, 60, 450, 120, 10}
	kills, checked := 0, 0
	for k, d := range delays {
		time.Sleep(d * time.Millisecond) // when to kill, not an assertion
		quiet := k%2 == 1
		if quiet {
			paused.Store(true)
		}
		a.Kill()
		kills++
		if quiet {
			Eventually(t, 60*time.Second, "the workers' requests to end", func() bool { return inflight.Load() == 0 })
		}
		a.start()
		if quiet {
			rcWaitFirstRelist(t, a)
			rcCheckConsistent(t, a)
			checked++
			paused.Store(false)
		}
	}
	close(stop)
	wg.Wait()
	a.Kill() // and once more with nothing in flight
	kills++
	a.start()
	t.Logf("%d SIGKILLs (%d checked after the first reconcile); %d deploys answered 2xx during the storm; %d requests failed with connection errors",
		kills, checked, ok2xx.Load(), connErrs.Load())
	if kills < 8 {
		t.Fatalf("only %d kills", kills)
	}
	if ok2xx.Load() == 0 {
		t.Fatalf("no deploy succeeded during the storm; the test did not exercise anything\n%s", a.Logs())
	}

	logs := a.Logs()
	t.Logf("the reconciler finished %d interrupted operations and %d interrupted removes, recreated %d containers, removed %d never-started ones",
		strings.Count(logs, "finished interrupted operation"), strings.Count(logs, "finished interrupted remove"),
		strings.Count(logs, "container missing; recreating"), strings.Count(logs, "never-started"))

	// After a restart and one reconcile the invariants hold already.
	rcWaitFirstRelist(t, a)
	rcCheckConsistent(t, a)

	// The same requests sent again complete.
	for i := range bodies {
		r := a.Do("POST", "/v1/instances", bodies[i])
		if r.Status != 200 && r.Status != 201 {
			t.Fatalf("re-sent deploy %d: status %d\n%s", i, r.Status, r.Body)
		}
	}
	var list []dtmahttp.Instance
	Eventually(t, 60*time.Second, "every instance running and settled", func() bool {
		list = rcList(t, a)
		if len(list) != n {
			return false
		}
		for _, inst := range list {
			if inst.DTMAStatus != "running" || inst.DockerStatus != "running" || inst.PendingOp != "" {
				return false
			}
		}
		return true
	})
	list = rcCheckConsistent(t, a)
	for i := range bodies {
		name := bodies[i]["name"].(string)
		cs := rcContainers(t, a.Docker, "dtma.host="+a.HostID, dtma.LabelInstance+"="+name)
		if len(cs) != 1 {
			t.Fatalf("instance %q has %d containers, want 1", name, len(cs))
		}
		if cs[0].State != "running" {
			t.Errorf("container of %q is %s", name, cs[0].State)
		}
		inst := rcMustGet(t, a, name)
		if inst.ContainerID != cs[0].ID {
			t.Errorf("instance %q records container %s, Docker has %s", name, inst.ContainerID, cs[0].ID)
		}
		if len(inst.Ports) != 1 {
			t.Fatalf("instance %q ports %+v", name, inst.Ports)
		}
		want := fmt.Sprintf("storm-%d", i)
		var got string
		deadline := time.Now().Add(20 * time.Second)
		for got = HTTPGet(inst.Ports[0].HostPort, "/"); got != want && time.Now().Before(deadline); got = HTTPGet(inst.Ports[0].HostPort, "/") {
			time.Sleep(100 * time.Millisecond)
		}
		if got != want {
			var published any
			if ins := a.Inspect(cs[0].ID); ins != nil {
				published = ins.Container.NetworkSettings.Ports
			}
			t.Fatalf("%q does not serve on its recorded port %d: answered %q, want %q; Docker publishes %v; records %+v",
				name, inst.Ports[0].HostPort, got, want, published, list)
		}
	}
}

// rcFireAndKill sends a request, SIGKILLs the agent d after, starts it
// again and waits for its first reconcile, after which the crash-safety
// invariants must hold.
func rcFireAndKill(t *testing.T, a *Agent, method, path string, d time.Duration) {
	t.Helper()
	base := a.URL
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = rcTry(base, method, path, nil, 30*time.Second) // may fail: the agent dies
	}()
	time.Sleep(d) // when to kill, not an assertion
	a.Kill()
	<-done
	a.start()
	rcWaitFirstRelist(t, a)
	rcCheckConsistent(t, a)
}

// rcKillDelays are the delays after firing a request at which the crash
// tests SIGKILL the agent: before, at and after the intent is recorded.
var rcKillDelays = []time.Duration{0, 15 * time.Millisecond, 40 * time.Millisecond, 100 * time.Millisecond}

// TestCrashDuringStop fires stop requests and SIGKILLs the agent shortly
// after each, then restarts it: after one reconcile nothing is left
// half-done, a re-sent stop answers 200, and the stopped instance stays
// stopped (neither Docker nor the agent starts it again).
func TestCrashDuringStop(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	rcDeploy(t, a, rcDeployBody(img, "crash stop", "", nil))
	for _, d := range rcKillDelays {
		a.Expect(200, "POST", "/v1/instances/crash%20stop/start", nil)
		rcFireAndKill(t, a, "POST", "/v1/instances/crash%20stop/stop", d)
		a.Expect(200, "POST", "/v1/instances/crash%20stop/stop", nil)
		inst := rcMustGet(t, a, "crash stop")
		if inst.DesiredState != "stopped" || inst.DTMAStatus != "stopped" || inst.DockerStatus != "exited" || inst.PendingOp != "" {
			t.Fatalf("after kill at %s and a re-sent stop: %+v", d, inst)
		}
	}
	inst := rcMustGet(t, a, "crash stop")
	rcWaitRelists(t, a, 2)
	if _, state, _, ok := rcStarted(t, a, inst.ContainerID); !ok || state != "exited" {
		t.Fatalf("stopped container is %q (exists %v) after two relists", state, ok)
	}
	if got := rcMustGet(t, a, "crash stop"); got.DTMAStatus != "stopped" || got.Drift {
		t.Fatalf("stopped instance shows %s drift=%v", got.DTMAStatus, got.Drift)
	}
}

// TestCrashDuringRemove fires removes and SIGKILLs the agent shortly after
// each: after a restart and one reconcile the remove has completed or not
// started; a re-sent remove answers 204 or 404 and the container is gone.
func TestCrashDuringRemove(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	for i, d := range rcKillDelays {
		name := fmt.Sprintf("crash remove %d", i)
		inst := rcDeploy(t, a, rcDeployBody(img, name, "", nil))
		ref := "/v1/instances/" + url.PathEscape(name)
		rcFireAndKill(t, a, "DELETE", ref, d)
		r := a.Do("DELETE", ref, nil)
		if r.Status != 204 && r.Status != 404 {
			t.Fatalf("re-sent remove after kill at %s: %d %s", d, r.Status, r.Body)
		}
		if _, status := rcGet(t, a, name); status != 404 {
			t.Fatalf("instance %q still served (%d) after remove", name, status)
		}
		if cs := rcContainers(t, a.Docker, dtma.LabelInstanceID+"="+inst.ID); len(cs) != 0 {
			t.Fatalf("container of removed instance %q still exists", name)
		}
	}
	rcWaitRelists(t, a, 1)
	if list := rcList(t, a); len(list) != 0 {
		t.Fatalf("removed instances came back: %+v", list)
	}
}

// TestCrashDuringRestart fires restarts and SIGKILLs the agent shortly
// after each: after a restart and one reconcile the instance runs, settled,
// with exactly one container.
func TestCrashDuringRestart(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	rcDeploy(t, a, rcDeployBody(img, "crash restart", "", nil))
	for _, d := range rcKillDelays {
		rcFireAndKill(t, a, "POST", "/v1/instances/crash%20restart/restart", d)
		inst := rcMustGet(t, a, "crash restart")
		if inst.DTMAStatus != "running" || inst.DockerStatus != "running" || inst.PendingOp != "" {
			t.Fatalf("after kill at %s: %+v", d, inst)
		}
		if cs := rcContainers(t, a.Docker, "dtma.host="+a.HostID, dtma.LabelInstance+"=crash restart"); len(cs) != 1 || cs[0].ID != inst.ContainerID {
			t.Fatalf("after kill at %s: %d containers for the instance", d, len(cs))
		}
	}
}

// TestCrashRestartKeepsContainers: kill -9 of the agent and a restart
// restart no container: the same container IDs with the same StartedAt,
// still recorded as running.
func TestCrashRestartKeepsContainers(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	type seen struct{ id, started string }
	before := map[string]seen{}
	for i := 0; i < 3; i++ {
		inst := rcDeploy(t, a, rcDeployBody(img, fmt.Sprintf("keep %d", i), dtma.NewUUID(), nil))
		id, _, started, _ := rcStarted(t, a, inst.ContainerID)
		before[inst.Name] = seen{id, started}
	}
	for k := 0; k < 3; k++ {
		a.Restart() // SIGKILL, then start again
		rcWaitFirstRelist(t, a)
		rcWaitRelists(t, a, 1)
		for name, b := range before {
			inst := rcMustGet(t, a, name)
			id, state, started, ok := rcStarted(t, a, b.id)
			if !ok || id != b.id || started != b.started || state != "running" {
				t.Fatalf("restart %d: container of %q is %s %s started %s, was %s started %s", k, name, id, state, started, b.id, b.started)
			}
			if inst.ContainerID != b.id || inst.DTMAStatus != "running" {
				t.Fatalf("restart %d: %q recorded as %s %s", k, name, inst.ContainerID, inst.DTMAStatus)
			}
		}
		if n := len(a.HostContainers()); n != len(before) {
			t.Fatalf("restart %d: %d containers, want %d", k, n, len(before))
		}
	}
	if strings.Contains(a.Logs(), "recreating") {
		t.Fatalf("the agent recreated a container after a restart:\n%s", a.Logs())
	}
}
