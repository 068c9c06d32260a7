package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// rcLossFixture deploys three instances with account ids and remembers
// their containers as Docker shows them.
type rcLossFixture struct {
	bodies  []map[string]any
	ids     map[string]string // name -> container id
	started map[string]string // name -> StartedAt
	accts   map[string]string // name -> account tool instance id
	ports   map[string]int    // name -> host port
}

func rcDeployForLoss(t *testing.T, a *Agent, img, prefix string) *rcLossFixture {
	t.Helper()
	f := &rcLossFixture{ids: map[string]string{}, started: map[string]string{}, accts: map[string]string{}, ports: map[string]int{}}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("%s Tool %d", prefix, i)
		acct := dtma.NewUUID()
		body := rcDeployBody(img, name, acct, map[string]string{"ECHO": fmt.Sprintf("lost-%d", i), "API_KEY": "k"}, dtma.Port{ContainerPort: 8080})
		inst := rcDeploy(t, a, body)
		id, _, started, _ := rcStarted(t, a, inst.ContainerID)
		f.bodies = append(f.bodies, body)
		f.ids[name], f.started[name], f.accts[name], f.ports[name] = id, started, acct, inst.Ports[0].HostPort
	}
	return f
}

// check asserts that every instance is served again by name and by account
// id, with the same container (same ID and StartedAt: nothing recreated or
// restarted), and that re-sending the original deploy is recognised as the
// same instance (200, same container).
func (f *rcLossFixture) check(t *testing.T, a *Agent, extra int) {
	t.Helper()
	Eventually(t, 60*time.Second, "every instance served again by name", func() bool {
		for name := range f.ids {
			if _, status := rcGet(t, a, name); status != 200 {
				return false
			}
		}
		return true
	})
	for i, body := range f.bodies {
		name := body["name"].(string)
		byName := rcMustGet(t, a, name)
		byAcct := rcMustGet(t, a, f.accts[name])
		if byName.ID != byAcct.ID || byName.ContainerID != f.ids[name] {
			t.Fatalf("%q: by name %s/%s, by account id %s/%s, container was %s", name, byName.ID, byName.ContainerID, byAcct.ID, byAcct.ContainerID, f.ids[name])
		}
		if byName.AccountToolInstanceID == nil || *byName.AccountToolInstanceID != f.accts[name] {
			t.Fatalf("%q: account tool instance id %v, want %s", name, byName.AccountToolInstanceID, f.accts[name])
		}
		if byName.DTMAStatus != "running" || byName.DesiredState != "running" || len(byName.Ports) != 1 || byName.Ports[0].HostPort != f.ports[name] {
			t.Fatalf("%q rebuilt as %+v", name, byName)
		}
		if strings.Join(byName.Env, ",") != "API_KEY,ECHO" {
			t.Fatalf("%q rebuilt with env names %v", name, byName.Env)
		}
		id, state, started, ok := rcStarted(t, a, f.ids[name])
		if !ok || id != f.ids[name] || started != f.started[name] || state != "running" {
			t.Fatalf("%q: container %s %s started %s; was started %s", name, id, state, started, f.started[name])
		}
		r := a.Do("POST", "/v1/instances", body)
		if r.Status != 200 {
			t.Fatalf("re-sent deploy %d after rebuild: %d (want 200: the same instance)\n%s", i, r.Status, r.Body)
		}
		var again dtmahttp.Instance
		r.Decode(t, &again)
		if again.ContainerID != f.ids[name] {
			t.Fatalf("re-sent deploy of %q answered container %s, want %s", name, again.ContainerID, f.ids[name])
		}
		if want := fmt.Sprintf("lost-%d", i); !Serves(f.ports[name], "/", want) {
			t.Fatalf("%q does not answer %q", name, want)
		}
	}
	if n := len(a.HostContainers()); n != len(f.ids)+extra {
		t.Fatalf("%d containers, want %d", n, len(f.ids)+extra)
	}
	if list := rcList(t, a); len(list) != len(f.ids)+extra {
		t.Fatalf("%d instances listed, want %d", len(list), len(f.ids)+extra)
	}
}

// TestRegistryLost: SIGKILL, delete the SQLite registry (and its -wal and
// -shm files), restart: the agent rebuilds every instance from Docker's
// labels and serves it by name and account id; nothing is recreated.
func TestRegistryLost(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	f := rcDeployForLoss(t, a, img, "Lost")
	// And one the operator stopped: rebuilt as stopped, not started.
	stopped := rcDeploy(t, a, rcDeployBody(img, "Lost Stopped", dtma.NewUUID(), nil))
	a.Expect(200, "POST", "/v1/instances/Lost%20Stopped/stop", nil)
	_, _, stoppedStarted, _ := rcStarted(t, a, stopped.ContainerID)
	a.Kill()
	db := filepath.Join(a.Opts.DataDir, "dtma.db")
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("registry file: %v", err)
	}
	for _, p := range []string{db, db + "-wal", db + "-shm"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatalf("remove %s: %v", p, err)
		}
	}
	a.start()
	f.check(t, a, 1)
	got := rcMustGet(t, a, *stopped.AccountToolInstanceID)
	if got.Name != "Lost Stopped" || got.ContainerID != stopped.ContainerID || got.DesiredState != "stopped" || got.DTMAStatus != "stopped" || got.Drift {
		t.Fatalf("stopped instance rebuilt as %+v", got)
	}
	if _, state, started, _ := rcStarted(t, a, stopped.ContainerID); state != "exited" || started != stoppedStarted {
		t.Fatalf("stopped container is %s, started %s (was %s)", state, started, stoppedStarted)
	}
	if strings.Contains(a.Logs(), "recreating") {
		t.Fatalf("the agent recreated a container:\n%s", a.Logs())
	}
}

// TestRegistryCorrupt: SIGKILL, overwrite the registry file with garbage,
// restart: the agent starts anyway, moves the corrupt file aside to
// <db>.corrupt-*, says so at error level, and serves every instance again
// from Docker's labels without recreating any.
func TestRegistryCorrupt(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	f := rcDeployForLoss(t, a, img, "Corrupt")
	a.Kill()
	db := filepath.Join(a.Opts.DataDir, "dtma.db")
	// Without its WAL (which may hold every page after a SIGKILL) the
	// garbage is all there is.
	for _, p := range []string{db + "-wal", db + "-shm"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatalf("remove %s: %v", p, err)
		}
	}
	garbage := []byte(strings.Repeat("this is not an SQLite database \x00\xff\x13", 512))
	if err := os.WriteFile(db, garbage, 0o600); err != nil {
		t.Fatalf("corrupt %s: %v", db, err)
	}
	a.start()
	f.check(t, a, 0)

	moved, _ := filepath.Glob(db + ".corrupt-*")
	if len(moved) == 0 {
		t.Fatalf("no %s.corrupt-* file; data dir holds %v", db, rcDirNames(t, a.Opts.DataDir))
	}
	var found bool
	for _, p := range moved {
		if data, err := os.ReadFile(p); err == nil && string(data) == string(garbage) {
			found = true
		}
	}
	if !found {
		t.Fatalf("none of %v holds the corrupt file's bytes", moved)
	}
	var errLine string
	for _, line := range strings.Split(a.Logs(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) && strings.Contains(strings.ToLower(line), "corrupt") {
			errLine = line
			break
		}
	}
	if errLine == "" {
		t.Fatalf("no error-level log line about the corrupt registry:\n%s", a.Logs())
	}
	if strings.Contains(a.Logs(), "recreating") {
		t.Fatalf("the agent recreated a container:\n%s", a.Logs())
	}
}

func rcDirNames(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
