package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// rcLegacyContainer creates and starts a container the way the legacy
// agent did: no DTMA labels (only the test label, for cleanup), named after
// the instance, ECHO set, port 8080 published on 127.0.0.1. It is removed
// (by id) when the test ends; it returns the id and the host port.
func rcLegacyContainer(t *testing.T, a *Agent, img, name, echo string) (string, int) {
	t.Helper()
	ctx := context.Background()
	hp := freePort(t)
	port, _ := network.PortFrom(8080, network.TCP)
	res, err := a.Docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        img,
			Env:          []string{"ECHO=" + echo},
			Labels:       dockertest.Labels(),
			ExposedPorts: network.PortSet{port: struct{}{}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(hp)}}},
		},
	})
	if err != nil {
		t.Fatalf("create legacy container %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = a.Docker.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	rcStart(t, a, res.ID)
	Eventually(t, 20*time.Second, name+" serving", func() bool { return HTTPGet(hp, "/") == echo })
	return res.ID, hp
}

// rcMigrate runs the real binary: dtma migrate --mapping file [--dry-run]
// against the agent (DTMA_URL, DTMA_TOKEN). It returns the output and the
// exit code.
func rcMigrate(t *testing.T, a *Agent, mapping string, dryRun bool) (string, int) {
	t.Helper()
	args := []string{"migrate", "--mapping", mapping}
	if dryRun {
		args = append(args, "--dry-run")
	}
	cmd := exec.Command(binPath, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "DTMA_URL=" + a.URL, "DTMA_TOKEN=" + Token}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("run dtma migrate: %v\n%s", err, out)
	return "", -1
}

// rcLine returns the output line that mentions name.
func rcLine(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, name) {
			return l
		}
	}
	return ""
}

type rcLegacy struct {
	name, acct, id, started string
	port                    int
	echo                    string
}

// TestMigrateJSON migrates legacy containers listed in a JSON mapping: a
// dry run changes nothing and says what it would do; the real run adopts
// the two that match without recreating or restarting them and reports the
// missing one and the one whose image differs (exit code 2); running it
// again changes nothing. The adopted instances are then managed like any
// other, by name and by account id, across an agent restart.
func TestMigrateJSON(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	sfx := strings.TrimPrefix(a.HostID, "e2e-")
	var good []*rcLegacy
	for _, l := range []string{"A", "B"} {
		lg := &rcLegacy{name: "Legacy Tool " + l + " " + sfx, acct: dtma.NewUUID(), echo: "legacy-" + l}
		lg.id, lg.port = rcLegacyContainer(t, a, img, strings.ReplaceAll(lg.name, " ", "-"), lg.echo)
		_, _, lg.started, _ = rcStarted(t, a, lg.id)
		good = append(good, lg)
	}
	otherName := "Legacy Tool C " + sfx // its container runs another image than the mapping says
	otherID, _ := rcLegacyContainer(t, a, img, strings.ReplaceAll(otherName, " ", "-"), "legacy-C")
	missingName := "Legacy Tool D " + sfx // no container at all

	entries := []map[string]string{}
	for _, lg := range good {
		entries = append(entries, map[string]string{"account_tool_instance_id": lg.acct, "instance_name_on_toolbox": lg.name, "docker_image_url": img})
	}
	entries = append(entries,
		map[string]string{"account_tool_instance_id": dtma.NewUUID(), "instance_name_on_toolbox": otherName, "docker_image_url": "ghcr.io/example/other-tool:2.0"},
		map[string]string{"account_tool_instance_id": dtma.NewUUID(), "instance_name_on_toolbox": missingName, "docker_image_url": img},
	)
	data, _ := json.Marshal(entries)
	mapping := filepath.Join(t.TempDir(), "mapping.json")
	if err := os.WriteFile(mapping, data, 0o600); err != nil {
		t.Fatal(err)
	}

	unchangedContainers := func(when string) {
		t.Helper()
		for _, lg := range good {
			id, state, started, ok := rcStarted(t, a, lg.id)
			if !ok || id != lg.id || started != lg.started || state != "running" {
				t.Fatalf("%s: legacy container of %q is %s %s started %s, was started %s", when, lg.name, id, state, started, lg.started)
			}
		}
		if _, state, _, ok := rcStarted(t, a, otherID); !ok || state != "running" {
			t.Fatalf("%s: the skipped container is %q (exists %v)", when, state, ok)
		}
	}

	// Dry run: says what it would do, changes nothing.
	out, code := rcMigrate(t, a, mapping, true)
	if code != 2 {
		t.Fatalf("dry run exit code %d, want 2 (skipped entries)\n%s", code, out)
	}
	for _, lg := range good {
		if l := rcLine(out, lg.name); !strings.Contains(l, "would adopt") {
			t.Fatalf("dry run line for %q: %q\n%s", lg.name, l, out)
		}
	}
	for _, n := range []string{otherName, missingName} {
		if l := rcLine(out, n); !strings.Contains(l, "skip") {
			t.Fatalf("dry run line for %q: %q\n%s", n, l, out)
		}
	}
	if l := rcLine(out, otherName); !strings.Contains(l, "image") {
		t.Fatalf("the image mismatch is not reported: %q", l)
	}
	if !strings.Contains(out, "would adopt 2, unchanged 0, skipped 2") {
		t.Fatalf("dry run summary:\n%s", out)
	}
	if list := rcList(t, a); len(list) != 0 {
		t.Fatalf("a dry run recorded instances: %+v", list)
	}
	unchangedContainers("after the dry run")

	// The real run.
	out, code = rcMigrate(t, a, mapping, false)
	if code != 2 || !strings.Contains(out, "adopted 2, unchanged 0, skipped 2") {
		t.Fatalf("migrate: exit code %d\n%s", code, out)
	}
	t.Logf("dtma migrate:\n%s", out)
	unchangedContainers("after the migration")
	list := rcList(t, a)
	if len(list) != 2 {
		t.Fatalf("after the migration %d instances: %+v", len(list), list)
	}
	rows := map[string]int64{}
	for _, lg := range good {
		inst := rcMustGet(t, a, lg.name)
		if inst.ContainerID != lg.id || inst.Tracking != "container_id" || inst.DTMAStatus != "running" || inst.DockerStatus != "running" ||
			inst.ContainerName != strings.ReplaceAll(lg.name, " ", "-") || inst.AccountToolInstanceID == nil || *inst.AccountToolInstanceID != lg.acct {
			t.Fatalf("adopted %q as %+v", lg.name, inst)
		}
		if len(inst.Ports) != 1 || inst.Ports[0].HostPort != lg.port {
			t.Fatalf("adopted %q with ports %+v, want host port %d", lg.name, inst.Ports, lg.port)
		}
		rows[inst.ID], _, _ = rcRegistryRow(t, a, inst.ID)
	}
	for _, n := range []string{otherName, missingName} {
		if _, status := rcGet(t, a, n); status != 404 {
			t.Fatalf("skipped %q is served (%d)", n, status)
		}
	}

	// Again: nothing changes.
	out, code = rcMigrate(t, a, mapping, false)
	if code != 2 || !strings.Contains(out, "adopted 0, unchanged 2, skipped 2") {
		t.Fatalf("second migrate: exit code %d\n%s", code, out)
	}
	for _, lg := range good {
		if l := rcLine(out, lg.name); !strings.Contains(l, "unchanged") {
			t.Fatalf("second run line for %q: %q", lg.name, l)
		}
	}
	unchangedContainers("after the second migration")
	for id, u := range rows {
		if u2, _, _ := rcRegistryRow(t, a, id); u2 != u {
			t.Fatalf("the second migration rewrote row %s", id)
		}
	}
	if n := len(rcList(t, a)); n != 2 {
		t.Fatalf("after the second migration %d instances", n)
	}

	// Managed like any other: by name and by account id.
	a0, b0 := good[0], good[1]
	r := a.Expect(200, "POST", "/tools/"+url.PathEscape(a0.name)+"/stop", nil)
	if m := r.JSON(t); m["success"] != true {
		t.Fatalf("legacy stop: %s", r.Body)
	}
	if _, state, _, _ := rcStarted(t, a, a0.id); state != "exited" {
		t.Fatalf("stopped legacy container is %s", state)
	}
	a.Expect(200, "POST", "/v1/instances/"+a0.acct+"/start", nil)
	_, state, started, _ := rcStarted(t, a, a0.id)
	if state != "running" {
		t.Fatalf("started legacy container is %s", state)
	}
	a0.started = started
	Eventually(t, 20*time.Second, a0.name+" serving after start", func() bool { return HTTPGet(a0.port, "/") == a0.echo })
	st := a.Expect(200, "GET", "/tools/"+a0.acct+"/status", nil).JSON(t)
	if st["status"] != "running" {
		t.Fatalf("legacy status by account id: %v", st)
	}
	HTTPGet(b0.port, "/logged")
	Eventually(t, 20*time.Second, "the adopted container's logs", func() bool {
		r := a.Expect(200, "GET", "/tools/"+url.PathEscape(b0.name)+"/logs?tail=50", nil)
		return strings.Contains(string(r.Body), "request GET /logged")
	})

	// After an agent restart: still served, still managed, not restarted.
	a.Restart()
	rcWaitFirstRelist(t, a)
	rcWaitRelists(t, a, 1)
	for _, lg := range good {
		byName := rcMustGet(t, a, lg.name)
		byAcct := rcMustGet(t, a, lg.acct)
		if byName.ID != byAcct.ID || byName.ContainerID != lg.id || byName.Tracking != "container_id" || byName.DTMAStatus != "running" {
			t.Fatalf("after restart %q: %+v", lg.name, byName)
		}
		if _, state, started, _ := rcStarted(t, a, lg.id); state != "running" || started != lg.started {
			t.Fatalf("after restart the container of %q is %s started %s, was %s", lg.name, state, started, lg.started)
		}
	}
	a.Expect(200, "POST", "/v1/instances/"+b0.acct+"/stop", nil)
	if got := rcMustGet(t, a, b0.name); got.DTMAStatus != "stopped" || got.DockerStatus != "exited" {
		t.Fatalf("stop after restart: %+v", got)
	}
	a.Expect(204, "DELETE", "/v1/instances/"+url.PathEscape(b0.name), nil)
	if a.Inspect(b0.id) != nil {
		t.Fatalf("removing the adopted instance left its container")
	}
}

// TestMigrateCSV migrates from a CSV mapping (columns in another order) a
// legacy container named in lower case, reports the missing one, and then
// treats the adopted instance like any other: removed behind the agent's
// back, it is recreated from the recorded spec (same name, same port, now
// with DTMA's labels) and survives an agent restart.
func TestMigrateCSV(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	sfx := strings.TrimPrefix(a.HostID, "e2e-")
	name := "CSV Tool " + sfx
	cname := strings.ToLower(strings.ReplaceAll(name, " ", "-"))
	acct := dtma.NewUUID()
	id, port := rcLegacyContainer(t, a, img, cname, "legacy-csv")
	_, _, started, _ := rcStarted(t, a, id)

	csv := "instance_name_on_toolbox, docker_image_url, account_tool_instance_id\n" +
		name + ", " + img + ", " + acct + "\n" +
		"CSV Missing " + sfx + ", " + img + ", " + dtma.NewUUID() + "\n"
	mapping := filepath.Join(t.TempDir(), "mapping.csv")
	if err := os.WriteFile(mapping, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := rcMigrate(t, a, mapping, false)
	if code != 2 || !strings.Contains(out, "adopted 1, unchanged 0, skipped 1") {
		t.Fatalf("migrate: exit code %d\n%s", code, out)
	}
	if l := rcLine(out, "CSV Missing"); !strings.Contains(l, "skip") {
		t.Fatalf("missing container not reported: %q\n%s", l, out)
	}
	inst := rcMustGet(t, a, acct)
	if inst.Name != name || inst.ContainerID != id || inst.ContainerName != cname || inst.Tracking != "container_id" {
		t.Fatalf("adopted as %+v", inst)
	}
	if _, _, s, _ := rcStarted(t, a, id); s != started {
		t.Fatalf("migration restarted the container")
	}

	// Removed behind the agent's back: recreated like any instance.
	rcRemove(t, a, id)
	var now dtmahttp.Instance
	Eventually(t, 60*time.Second, "the adopted instance recreated", func() bool {
		now = rcMustGet(t, a, name)
		return now.ContainerID != "" && now.ContainerID != id && now.DockerStatus == "running" && now.PendingOp == ""
	})
	res := a.Inspect(now.ContainerID)
	if res == nil || res.Container.Name != "/"+cname || res.Container.Config.Labels[dtma.LabelHost] != a.HostID || res.Container.Config.Labels[dtma.LabelAccountID] != acct {
		t.Fatalf("recreated container: %+v", res)
	}
	if now.Tracking != "label" || len(now.Ports) != 1 || now.Ports[0].HostPort != port {
		t.Fatalf("recreated instance: %+v", now)
	}
	Eventually(t, 20*time.Second, "the recreated instance serving", func() bool { return HTTPGet(port, "/") == "legacy-csv" })

	a.Restart()
	rcWaitFirstRelist(t, a)
	if got := rcMustGet(t, a, acct); got.ContainerID != now.ContainerID || got.DTMAStatus != "running" {
		t.Fatalf("after restart: %+v", got)
	}
	if n := len(a.HostContainers()); n != 1 {
		t.Fatalf("%d containers for the host, want 1", n)
	}
}
