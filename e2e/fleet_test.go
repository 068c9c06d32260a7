package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
)

// fleetHostNames returns the sorted "host/name" of instances.
func fleetHostNames(list []dtmahttp.Instance) []string {
	var out []string
	for _, inst := range list {
		out = append(out, inst.HostID+"/"+inst.Name)
	}
	slices.Sort(out)
	return out
}

// pgWaitRelist waits until the agent has finished a full relist of Docker
// that started after now, so that whatever it would adopt or change from
// Docker's current state has been done.
func (a *Agent) pgWaitRelist(now time.Time) {
	a.t.Helper()
	Eventually(a.t, 30*time.Second, "a relist by "+a.HostID, func() bool {
		var h struct {
			LastObservedAt *time.Time `json:"last_observed_at"`
		}
		r := a.Do("GET", "/v1/health", nil)
		if r.Status != 200 || json.Unmarshal(r.Body, &h) != nil || h.LastObservedAt == nil {
			return false
		}
		return h.LastObservedAt.After(now)
	})
}

// TestFleet runs two agents (two host ids) on one database and one Docker
// daemon: each sees and changes only its own instances, the fleet view of
// either shows both hosts', and `dtma fleet ls` prints them.
func TestFleet(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	dsn := pgDatabase(t)
	a := StartAgent(t, AgentOptions{RegistryURL: dsn})
	b := StartAgent(t, AgentOptions{RegistryURL: dsn})
	if a.HostID == b.HostID {
		t.Fatalf("both agents have host id %s", a.HostID)
	}

	a1 := a.pgDeploy(map[string]any{"name": "fleet-a1", "image": img, "ports": []map[string]any{{"container_port": 8080}}})
	a.pgDeploy(map[string]any{"name": "fleet-a2", "image": img, "account_tool_instance_id": "0b9d6f1e-1c1a-4e0e-9c55-6f7d2f3b4a01"})
	b1 := b.pgDeploy(map[string]any{"name": "fleet-b1", "image": img, "ports": []map[string]any{{"container_port": 8080}}})
	// Names and account ids are unique per host, not across the fleet: the
	// same name and account id deploy on both hosts (the second container
	// takes the host-qualified container name).
	sharedAcct := "7c2e4d1a-3b5f-4c6d-8e9f-0a1b2c3d4e5f"
	sa := a.pgDeploy(map[string]any{"name": "fleet-same", "image": img, "account_tool_instance_id": sharedAcct})
	sb := b.pgDeploy(map[string]any{"name": "fleet-same", "image": img, "account_tool_instance_id": sharedAcct})
	if sa.ContainerName == sb.ContainerName || sa.ID == sb.ID {
		t.Fatalf("fleet-same on both hosts shares container name %q or id %q", sa.ContainerName, sa.ID)
	}

	// Let both reconcilers list Docker (which holds both hosts' containers)
	// at least once more: neither may adopt the other's containers.
	now := time.Now()
	a.pgWaitRelist(now)
	b.pgWaitRelist(now)

	wantA := []string{a.HostID + "/fleet-a1", a.HostID + "/fleet-a2", a.HostID + "/fleet-same"}
	wantB := []string{b.HostID + "/fleet-b1", b.HostID + "/fleet-same"}
	if got := fleetHostNames(a.pgList("/v1/instances")); !slices.Equal(got, wantA) {
		t.Errorf("agent a lists %v, want only its own %v", got, wantA)
	}
	if got := fleetHostNames(b.pgList("/v1/instances")); !slices.Equal(got, wantB) {
		t.Errorf("agent b lists %v, want only its own %v", got, wantB)
	}
	wantAll := slices.Sorted(slices.Values(append(append([]string{}, wantA...), wantB...)))
	for _, ag := range []*Agent{a, b} {
		fleet := ag.pgList("/v1/fleet/instances")
		if got := fleetHostNames(fleet); !slices.Equal(got, wantAll) {
			t.Errorf("fleet view of %s = %v, want %v", ag.HostID, got, wantAll)
		}
		for _, inst := range fleet {
			if inst.DockerStatus != "running" || inst.DTMAStatus != "running" || len(inst.ContainerID) != 64 {
				t.Errorf("fleet view of %s: %s/%s is %s/%s container %q", ag.HostID, inst.HostID, inst.Name, inst.DTMAStatus, inst.DockerStatus, inst.ContainerID)
			}
		}
	}
	// The table holds both hosts' rows, each with its host id.
	rows := pgMustRows(t, dsn, "")
	var tableNames []string
	for _, r := range rows {
		tableNames = append(tableNames, r.HostID+"/"+r.Name)
	}
	slices.Sort(tableNames)
	if !slices.Equal(tableNames, wantAll) {
		t.Errorf("table rows %v, want %v", tableNames, wantAll)
	}

	// An agent cannot see or touch another host's instance, even by id.
	for _, ref := range []string{"fleet-b1", b1.ID} {
		if r := a.Do("GET", "/v1/instances/"+ref, nil); r.Status != 404 {
			t.Errorf("agent a GET %s: %d, want 404\n%s", ref, r.Status, r.Body)
		}
		if r := a.Do("POST", "/v1/instances/"+ref+"/stop", nil); r.Status != 404 {
			t.Errorf("agent a stop %s: %d, want 404\n%s", ref, r.Status, r.Body)
		}
		if r := a.Do("DELETE", "/v1/instances/"+ref, nil); r.Status != 404 {
			t.Errorf("agent a DELETE %s: %d, want 404\n%s", ref, r.Status, r.Body)
		}
	}
	if st, _ := pgDockerState(t, b.Docker, b1.ContainerID); st != "running" {
		t.Errorf("b's container after a's attempts: %s, want running", st)
	}
	// Stopping fleet-same on a leaves b's fleet-same running.
	a.Expect(200, "POST", "/v1/instances/fleet-same/stop", nil)
	if st, _ := pgDockerState(t, a.Docker, sa.ContainerID); st != "exited" {
		t.Errorf("a's fleet-same after stop: %s", st)
	}
	if got := b.pgGet("fleet-same"); got.DockerStatus != "running" || got.ContainerID != sb.ContainerID {
		t.Errorf("b's fleet-same after a stopped its own: %+v", got)
	}
	if st, _ := pgDockerState(t, b.Docker, sb.ContainerID); st != "running" {
		t.Errorf("b's fleet-same container: %s, want running", st)
	}
	// b's fleet view shows a's change (read from the shared table).
	Eventually(t, 30*time.Second, "b's fleet view shows a's fleet-same stopped", func() bool {
		for _, inst := range b.pgList("/v1/fleet/instances") {
			if inst.HostID == a.HostID && inst.Name == "fleet-same" {
				return inst.DockerStatus == "exited" && inst.DTMAStatus == "stopped"
			}
		}
		return false
	})

	// `dtma fleet ls` against either agent prints every instance with its
	// host id.
	for _, ag := range []*Agent{a, b} {
		env := []string{"DTMA_URL=" + ag.URL, "DTMA_TOKEN=" + Token}
		out, stderr, code := dtmaCLI(t, env, "fleet", "ls")
		if code != 0 {
			t.Fatalf("dtma fleet ls against %s: exit %d\n%s", ag.HostID, code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 6 || !strings.HasPrefix(lines[0], "HOST") {
			t.Fatalf("dtma fleet ls printed:\n%s\nwant a header and 5 rows", out)
		}
		var printed []string
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			printed = append(printed, f[0]+"/"+f[1])
		}
		slices.Sort(printed)
		if !slices.Equal(printed, wantAll) {
			t.Errorf("dtma fleet ls against %s printed %v, want %v\n%s", ag.HostID, printed, wantAll, out)
		}
		if !strings.Contains(out, a1.ContainerID[:12]) || !strings.Contains(out, b1.ContainerID[:12]) {
			t.Errorf("dtma fleet ls lacks the container ids:\n%s", out)
		}

		out, stderr, code = dtmaCLI(t, env, "fleet", "ls", "-o", "json")
		if code != 0 {
			t.Fatalf("dtma fleet ls -o json: exit %d\n%s", code, stderr)
		}
		var list []dtmahttp.Instance
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("dtma fleet ls -o json is not JSON: %v\n%s", err, out)
		}
		if got := fleetHostNames(list); !slices.Equal(got, wantAll) {
			t.Errorf("dtma fleet ls -o json = %v, want %v", got, wantAll)
		}
		for _, inst := range list {
			if inst.ID == "" || len(inst.ContainerID) != 64 || inst.Image != img {
				t.Errorf("dtma fleet ls -o json entry %+v", inst)
			}
		}

		// `dtma ls` shows only the agent's own host.
		out, _, code = dtmaCLI(t, env, "ls", "-q")
		want := []string{"fleet-b1", "fleet-same"}
		if ag == a {
			want = []string{"fleet-a1", "fleet-a2", "fleet-same"}
		}
		got := strings.Fields(out)
		slices.Sort(got)
		if code != 0 || !slices.Equal(got, want) {
			t.Errorf("dtma ls -q against %s: exit %d, %v; want %v", ag.HostID, code, got, want)
		}
	}
}
