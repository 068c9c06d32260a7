package e2e

import (
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// Point 7 of the issue: the 404 bug stays dead. The old agent kept its
// managed set in memory and answered 404 for every container it had
// deployed before its last restart.

// restartInst is one instance deployed before the agent dies.
type restartInst struct {
	name, acct, face string
	running          bool
	port             int
	id               string // container id
	started          string // Docker State.StartedAt
}

func deployForRestart(t *testing.T, a *Agent) []*restartInst {
	t.Helper()
	img := EchoImage(t)
	s := uniqueSuffix()
	insts := []*restartInst{
		{name: "Context7 MCP Server-" + s, acct: dtma.NewUUID(), face: "legacy", running: true, port: freePort(t)},
		{name: "V1 Running " + s, acct: dtma.NewUUID(), face: "v1", running: true, port: freePort(t)},
		{name: "V1 Stopped " + s, acct: dtma.NewUUID(), face: "v1", running: false, port: freePort(t)},
	}
	for _, in := range insts {
		if in.face == "legacy" {
			r := a.Expect(201, "POST", "/tools", legacyBody(img, in.name, in.acct, []string{"ECHO=" + in.name},
				map[string]any{"8080/tcp": []map[string]string{{"HostPort": strconv.Itoa(in.port)}}}))
			in.id = str(jget(r.JSON(t), "data.container_id"))
		} else {
			r := a.Expect(201, "POST", "/v1/instances", map[string]any{"name": in.name, "account_tool_instance_id": in.acct, "image": img,
				"env": map[string]string{"ECHO": in.name}, "ports": []map[string]any{{"container_port": 8080, "host_port": in.port}}})
			in.id = str(r.JSON(t)["container_id"])
		}
		// The tool answers before anything else happens to it, so that it
		// has logged at least one line: a stop in the first milliseconds
		// would end it before it prints, and the log checks below need a
		// line from every instance.
		Eventually(t, 30*time.Second, in.name+" answering on its port", func() bool { return HTTPGet(in.port, "/") == in.name })
		if !in.running {
			a.Expect(200, "POST", "/v1/instances/"+in.acct+"/stop", nil)
		}
		in.started = startedAt(t, a, in.id)
	}
	return insts
}

// checkDockerUnchanged asserts every container still exists with the same
// id, StartedAt and running state.
func checkDockerUnchanged(t *testing.T, a *Agent, insts []*restartInst, when string) {
	t.Helper()
	ids := hostContainers(a)
	var want []string
	for _, in := range insts {
		want = append(want, in.id)
		ins := a.Inspect(in.id)
		if ins == nil {
			t.Fatalf("%s: container %s of %q is gone", when, in.id, in.name)
		}
		if ins.Container.State.StartedAt != in.started {
			t.Errorf("%s: %q was (re)started: StartedAt %s -> %s", when, in.name, in.started, ins.Container.State.StartedAt)
		}
		if ins.Container.State.Running != in.running {
			t.Errorf("%s: %q running=%v, want %v", when, in.name, ins.Container.State.Running, in.running)
		}
	}
	sort.Strings(want)
	if !slices.Equal(ids, want) {
		t.Errorf("%s: the host's containers are %v, want exactly %v", when, ids, want)
	}
}

// waitRelist waits until the agent reports a full relist after since, so
// that whatever its start-up reconciliation does has been done.
func waitRelist(t *testing.T, a *Agent, since time.Time) {
	t.Helper()
	Eventually(t, 30*time.Second, "a relist after the agent started", func() bool {
		r := a.Do("GET", "/v1/health", nil)
		if r.Status != 200 {
			return false
		}
		ts, err := time.Parse(time.RFC3339Nano, str(r.JSON(t)["last_observed_at"]))
		return err == nil && ts.After(since)
	})
}

// TestRestartKeepsInstances: after SIGKILL and restart the agent knows
// every instance on both faces, by name and by account id, without having
// touched a container; lifecycle and delete work on all of them.
func TestRestartKeepsInstances(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	insts := deployForRestart(t, a)

	for round := 1; round <= 2; round++ {
		since := time.Now()
		a.Restart() // SIGKILL, start again with the same data
		waitRelist(t, a, since)
		checkDockerUnchanged(t, a, insts, "after SIGKILL #"+strconv.Itoa(round))
	}

	// Listed on both faces, with Docker's state.
	tools := a.Expect(200, "GET", "/tools/status", nil).JSON(t)
	byName := map[string]map[string]any{}
	for _, inst := range jlist(a.Expect(200, "GET", "/v1/instances", nil).JSON(t), "instances") {
		byName[str(inst["name"])] = inst
	}
	if len(byName) != len(insts) {
		t.Errorf("v1 lists %d instances, want %d", len(byName), len(insts))
	}
	for _, in := range insts {
		want := map[bool]string{true: "running", false: "exited"}[in.running]
		backendWord := map[bool]string{true: "running", false: "stopped"}[in.running]
		tool := findTool(t, tools, in.name)
		if tool["container_id"] != in.id || tool["state"] != want || tool["status"] != backendWord || tool["account_tool_instance_id"] != in.acct {
			t.Errorf("/tools/status lists %q as %v", in.name, tool)
		}
		v := byName[in.name]
		if v == nil || v["container_id"] != in.id || v["docker_status"] != want || v["account_tool_instance_id"] != in.acct {
			t.Errorf("/v1/instances lists %q as %v", in.name, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, in := range insts {
		if in.running && !Serves(in.port, "/", in.name) {
			t.Errorf("%q does not answer on its port after the agent restarts", in.name)
		}
	}

	// Every lifecycle route answers 2xx by name and by account id on both
	// faces.
	for _, in := range insts {
		for _, ref := range []string{url.PathEscape(in.name), in.acct} {
			// Legacy.
			r := a.Expect(200, "GET", "/tools/"+ref+"/status", nil)
			if body := r.JSON(t); body["success"] != true || jget(body, "data.container_id") != in.id {
				t.Errorf("legacy status of %s: %s", ref, r.Body)
			}
			r = a.Expect(200, "GET", "/tools/"+ref+"/logs?tail=5", nil)
			if logs := strList(r.JSON(t)["logs"]); len(logs) == 0 {
				t.Errorf("legacy logs of %s are empty", ref)
			}
			a.Expect(200, "POST", "/tools/"+ref+"/stop", nil)
			r = a.Expect(200, "POST", "/tools/"+ref+"/start", nil)
			if jget(r.JSON(t), "data.state") != "running" {
				t.Errorf("legacy start of %s: %s", ref, r.Body)
			}
			r = a.Expect(200, "POST", "/tools/"+ref+"/restart", nil)
			if jget(r.JSON(t), "data.container_id") != in.id {
				t.Errorf("legacy restart of %s acted on another container: %s", ref, r.Body)
			}
			// v1.
			r = a.Expect(200, "GET", "/v1/instances/"+ref, nil)
			if r.JSON(t)["container_id"] != in.id {
				t.Errorf("v1 get of %s: %s", ref, r.Body)
			}
			if r = a.Expect(200, "GET", "/v1/instances/"+ref+"/logs?tail=5", nil); !strings.Contains(string(r.Body), "listening on :8080") && !strings.Contains(string(r.Body), "request GET") {
				t.Errorf("v1 logs of %s: %q", ref, r.Body)
			}
			a.Expect(200, "POST", "/v1/instances/"+ref+"/stop", nil)
			a.Expect(200, "POST", "/v1/instances/"+ref+"/start", nil)
			r = a.Expect(200, "POST", "/v1/instances/"+ref+"/restart", nil)
			if jget(r.JSON(t), "instance.container_id") != in.id || jget(r.JSON(t), "instance.docker_status") != "running" {
				t.Errorf("v1 restart of %s: %s", ref, r.Body)
			}
		}
	}
	if got := hostContainers(a); len(got) != len(insts) {
		t.Errorf("%d containers after the lifecycle calls, want %d (nothing recreated)", len(got), len(insts))
	}

	// Delete: the legacy one by account id on the legacy face, the others
	// by name on v1.
	for _, in := range insts {
		if in.face == "legacy" {
			a.Expect(200, "DELETE", "/tools/"+in.acct, nil)
		} else {
			a.Expect(204, "DELETE", "/v1/instances/"+url.PathEscape(in.name), nil)
		}
		if a.Inspect(in.id) != nil {
			t.Errorf("container of %q still exists after delete", in.name)
		}
	}
	if got := hostContainers(a); len(got) != 0 {
		t.Errorf("containers left: %v", got)
	}
	if names := v1Names(t, a); len(names) != 0 {
		t.Errorf("instances left: %v", names)
	}
}

// TestGracefulStopLeavesContainers: SIGTERM ends the agent cleanly and
// stops no container; the next agent finds them all as they were.
func TestGracefulStopLeavesContainers(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	insts := deployForRestart(t, a)

	a.Stop() // SIGTERM
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exited with %d after SIGTERM, want 0\n%s", code, a.Logs())
	}
	if !strings.Contains(a.Logs(), "containers left running") {
		t.Errorf("the agent did not log its graceful stop:\n%s", a.Logs())
	}
	checkDockerUnchanged(t, a, insts, "after SIGTERM")

	since := time.Now()
	a.Restart()
	waitRelist(t, a, since)
	checkDockerUnchanged(t, a, insts, "after the restart following SIGTERM")
	for _, in := range insts {
		r := a.Expect(200, "GET", "/tools/"+in.acct+"/status", nil)
		if want := map[bool]string{true: "running", false: "stopped"}[in.running]; r.JSON(t)["status"] != want {
			t.Errorf("status of %q after the restart: %s, want %s", in.name, r.Body, want)
		}
	}
}
