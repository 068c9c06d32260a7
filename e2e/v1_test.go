package e2e

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// The v1 face, end to end.

// TestV1Flow deploys through POST /v1/instances and drives the instance
// through every v1 route: get by each kind of ref, start/stop/restart with
// their changed semantics, logs (tail and follow), idempotent re-deploy and
// delete.
func TestV1Flow(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	suffix := uniqueSuffix()
	name := "V1 Tool " + suffix
	ref := url.PathEscape(name)
	acct := dtma.NewUUID()
	port := freePort(t)
	echo := "v1-echo-" + suffix
	other := "v1-other-value-" + suffix
	deploy := map[string]any{
		"name": name, "account_tool_instance_id": acct, "image": img,
		"env":   map[string]string{"ECHO": echo, "OTHER_SETTING": other},
		"ports": []map[string]any{{"container_port": 8080, "host_port": port}},
	}
	before := time.Now().Add(-5 * time.Second)

	r := a.Expect(201, "POST", "/v1/instances", deploy)
	inst := r.JSON(t)
	for _, f := range []string{"id", "name", "account_tool_instance_id", "container_name", "container_id", "image",
		"desired_state", "dtma_status", "docker_status", "ports", "created_at", "updated_at", "last_error", "env"} {
		if _, ok := inst[f]; !ok {
			t.Errorf("instance JSON lacks %q: %s", f, r.Body)
		}
	}
	id, cid := str(inst["id"]), str(inst["container_id"])
	want := map[string]any{
		"name": name, "account_tool_instance_id": acct, "image": img, "desired_state": "running",
		"dtma_status": "running", "docker_status": "running", "last_error": nil,
		"ports.0.container_port": float64(8080), "ports.0.host_port": float64(port), "ports.0.protocol": "tcp",
		"ports.0.host_ip": "127.0.0.1",
	}
	for path, v := range want {
		if got := jget(inst, path); got != v {
			t.Errorf("deploy %s = %v, want %v", path, got, v)
		}
	}
	if !dtma.IsUUID(id) || cid == "" {
		t.Fatalf("deploy id %q, container_id %q", id, cid)
	}
	if cn := str(inst["container_name"]); !strings.HasPrefix(cn, "dtma-") || !validContainerName.MatchString(cn) {
		t.Errorf("container_name %q is not a derived, valid Docker name", cn)
	}
	if env := strList(inst["env"]); !slices.Equal(env, []string{"ECHO", "OTHER_SETTING"}) {
		t.Errorf("env = %q, want the names only", env)
	}
	if strings.Contains(string(r.Body), echo) || strings.Contains(string(r.Body), other) {
		t.Errorf("deploy answer contains an env value: %s", r.Body)
	}
	for _, f := range []string{"created_at", "updated_at"} {
		ts, err := time.Parse(time.RFC3339Nano, str(inst[f]))
		if err != nil || ts.Before(before) || ts.After(time.Now().Add(5*time.Second)) {
			t.Errorf("%s = %v, want a current RFC 3339 time (%v)", f, inst[f], err)
		}
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running || strings.TrimPrefix(ins.Container.Name, "/") != str(inst["container_name"]) {
		t.Fatalf("Docker does not show container %s running as %v", cid, inst["container_name"])
	}
	Eventually(t, 30*time.Second, "echo answer", func() bool { return HTTPGet(port, "/") == echo })

	// List and get by name, account id (any case) and id.
	list := jlist(a.Expect(200, "GET", "/v1/instances", nil).JSON(t), "instances")
	if len(list) != 1 || list[0]["id"] != id {
		t.Fatalf("list = %v, want just %s", list, id)
	}
	for _, rf := range []string{ref, acct, strings.ToUpper(acct), id} {
		got := a.Expect(200, "GET", "/v1/instances/"+rf, nil).JSON(t)
		if got["id"] != id || got["name"] != name {
			t.Errorf("GET by %s answered %v", rf, got)
		}
	}

	action := func(rf, verb string, wantChanged bool, wantDocker string) map[string]any {
		t.Helper()
		r := a.Expect(200, "POST", "/v1/instances/"+rf+"/"+verb, nil)
		body := r.JSON(t)
		if body["changed"] != wantChanged || jget(body, "instance.docker_status") != wantDocker || jget(body, "instance.id") != id || str(body["message"]) == "" {
			t.Fatalf("%s via %s answered %s, want changed=%v docker_status=%s", verb, rf, r.Body, wantChanged, wantDocker)
		}
		return body
	}
	body := action(ref, "stop", true, "exited")
	if jget(body, "instance.desired_state") != "stopped" || jget(body, "instance.dtma_status") != "stopped" {
		t.Errorf("after stop: %v", body["instance"])
	}
	if ins := a.Inspect(cid); ins == nil || ins.Container.State.Running {
		t.Fatalf("Docker shows the container running after stop")
	}
	action(acct, "stop", false, "exited")
	body = action(id, "start", true, "running")
	if jget(body, "instance.desired_state") != "running" {
		t.Errorf("after start: %v", body["instance"])
	}
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Fatalf("Docker shows the container stopped after start")
	}
	action(ref, "start", false, "running")
	started := startedAt(t, a, cid)
	action(acct, "restart", true, "running")
	if now := startedAt(t, a, cid); now == started {
		t.Errorf("restart left StartedAt at %s", now)
	}
	// Restart of a stopped instance starts it.
	action(ref, "stop", true, "exited")
	action(ref, "restart", true, "running")
	if ins := a.Inspect(cid); ins == nil || !ins.Container.State.Running {
		t.Fatalf("Docker shows the container stopped after restart of a stopped instance")
	}
	Eventually(t, 30*time.Second, "echo answer after restart", func() bool { return HTTPGet(port, "/") == echo })

	// Logs with tail.
	HTTPGet(port, "/env/TAIL_ONE")
	HTTPGet(port, "/env/TAIL_TWO")
	Eventually(t, 30*time.Second, "tail=2 to give the last two requests", func() bool {
		r := a.Expect(200, "GET", "/v1/instances/"+ref+"/logs?tail=2", nil)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("logs Content-Type %q", ct)
		}
		return string(r.Body) == "request GET /env/TAIL_ONE\nrequest GET /env/TAIL_TWO\n"
	})
	all := string(a.Expect(200, "GET", "/v1/instances/"+id+"/logs", nil).Body)
	if !strings.Contains(all, "listening on :8080\n") || !strings.Contains(all, "request GET /\n") {
		t.Errorf("full logs lack the start-up or request lines:\n%s", all)
	}

	// Logs with follow: a line written after the stream opened arrives.
	lines, stop := followLogs(t, a, "/v1/instances/"+ref+"/logs?follow=true&tail=1")
	defer stop()
	waitLine(t, lines, "request GET /env/TAIL_TWO") // the stream is attached
	mark := "/env/FOLLOW_" + strings.ReplaceAll(suffix, "-", "_")
	HTTPGet(port, mark)
	waitLine(t, lines, "request GET "+mark)
	stop()

	// Idempotent re-deploy: 200, same instance and container.
	r = a.Expect(200, "POST", "/v1/instances", deploy)
	if got := r.JSON(t); got["id"] != id || got["container_id"] != cid || got["docker_status"] != "running" {
		t.Fatalf("re-deploy answered %s", r.Body)
	}
	if n := len(a.HostContainers()); n != 1 {
		t.Errorf("%d containers after re-deploy, want 1", n)
	}

	// Delete: 204, then 404 everywhere.
	r = a.Expect(204, "DELETE", "/v1/instances/"+ref, nil)
	if len(r.Body) != 0 {
		t.Errorf("204 with a body: %s", r.Body)
	}
	if a.Inspect(cid) != nil {
		t.Fatalf("container %s still exists after delete", cid)
	}
	for _, rf := range []string{ref, acct, id} {
		r = a.Expect(404, "GET", "/v1/instances/"+rf, nil)
		if jget(r.JSON(t), "error.code") != "not_found" {
			t.Errorf("GET %s after delete answered %s", rf, r.Body)
		}
	}
	r = a.Expect(404, "DELETE", "/v1/instances/"+ref, nil)
	if jget(r.JSON(t), "error.code") != "not_found" {
		t.Errorf("second delete answered %s", r.Body)
	}
	if names := v1Names(t, a); len(names) != 0 {
		t.Errorf("list after delete: %v", names)
	}
}

// TestV1PullNeverMissingImage: pull_policy never with an image the daemon
// does not have answers 400 naming the image and leaves no container and
// no instance behind.
func TestV1PullNeverMissingImage(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	image := "dtma-test-absent:" + strings.ReplaceAll(uniqueSuffix(), "-", "")
	name := "Never Pull " + uniqueSuffix()
	r := a.Expect(400, "POST", "/v1/instances", map[string]any{
		"name": name, "image": image, "pull_policy": "never",
		"ports": []map[string]any{{"container_port": 8080}},
	})
	e := r.JSON(t)
	if jget(e, "error.code") != "invalid" || !strings.Contains(str(jget(e, "error.message")), image) {
		t.Fatalf("answer %s, want code invalid and a message naming %s", r.Body, image)
	}
	if f := jget(e, "error.field"); f != "image" {
		t.Errorf("error.field = %v, want image", f)
	}
	if names := v1Names(t, a); len(names) != 0 {
		t.Errorf("instances left after the failed deploy: %v", names)
	}
	if ids := a.HostContainers(); len(ids) != 0 {
		t.Errorf("containers left after the failed deploy: %v", ids)
	}
	a.Expect(404, "GET", "/v1/instances/"+url.PathEscape(name), nil)
	// The name is free again: the same deploy with the real image works.
	r = a.Expect(201, "POST", "/v1/instances", map[string]any{"name": name, "image": EchoImage(t), "pull_policy": "never"})
	if r.JSON(t)["docker_status"] != "running" {
		t.Fatalf("deploy after the failure answered %s", r.Body)
	}
}

// TestV1HostPortAllocation: host_port 0 (or absent) allocates a free port
// in the agent's range, distinct per port, and the container answers on it.
func TestV1HostPortAllocation(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	echo := "alloc-v1-" + uniqueSuffix()
	r := a.Expect(201, "POST", "/v1/instances", map[string]any{
		"name": "Alloc V1 " + uniqueSuffix(), "image": img, "env": map[string]string{"ECHO": echo, "PORT": "8080"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": 0}, {"container_port": 9090}},
	})
	inst := r.JSON(t)
	ports := jlist(inst, "ports")
	if len(ports) != 2 {
		t.Fatalf("ports = %v, want 2", inst["ports"])
	}
	hp := map[float64]float64{}
	for _, p := range ports {
		h, _ := p["host_port"].(float64)
		if h < float64(a.portLo) || h > float64(a.portLo+39) {
			t.Errorf("host_port %v outside the agent's range %d-%d", h, a.portLo, a.portLo+39)
		}
		hp[p["container_port"].(float64)] = h
	}
	if hp[8080] == hp[9090] {
		t.Fatalf("both ports allocated %v", hp[8080])
	}
	if req := jlist(inst, "requested_ports"); len(req) != 2 || req[0]["host_port"] != float64(0) {
		t.Errorf("requested_ports = %v, want the request's host_port 0 kept", inst["requested_ports"])
	}
	Eventually(t, 30*time.Second, "echo answer on the allocated port", func() bool { return HTTPGet(int(hp[8080]), "/") == echo })
	ins := a.Inspect(str(inst["container_id"]))
	if ins == nil {
		t.Fatal("container missing")
	}
	for cp, h := range hp {
		var got []string
		for k, bs := range ins.Container.HostConfig.PortBindings {
			if k.Num() == uint16(cp) {
				for _, b := range bs {
					got = append(got, b.HostPort)
				}
			}
		}
		if !slices.Equal(got, []string{strconv.Itoa(int(h))}) {
			t.Errorf("Docker binds %v for %v, want %v", got, cp, h)
		}
	}
}

// followLogs opens a following log stream and returns its lines; stop
// closes it.
func followLogs(t *testing.T, a *Agent, path string) (<-chan string, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", a.URL+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, func() { cancel(); resp.Body.Close() }
}

// waitLine reads lines until want arrives (or fails after 20 s).
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("log stream ended before %q; saw %q", want, seen)
			}
			if l == want {
				return
			}
			seen = append(seen, l)
		case <-timeout:
			t.Fatalf("no %q in the followed logs within 20s; saw %q", want, seen)
		}
	}
}
