package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/backendtest"
	"github.com/moby/moby/client"
)

// TestSwitchOverAndRollback walks docs/SWITCHING.md as far as it can be
// walked without the Node agent: a legacy container is migrated without a
// restart, a tool is deployed through DTMA; rolling back (SIGTERM, then
// the guide's list of DTMA-created containers) stops nothing, lists exactly
// the container DTMA created and never the migrated one, which keeps its
// legacy name and id; switching forward again finds everything as it was.
func TestSwitchOverAndRollback(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_PUBLIC_STATUS=true"}})
	ctx := context.Background()
	sfx := uniqueSuffix()

	// The host before: a tool the legacy agent deployed.
	legacyName := "legacy-tool-" + sfx
	legacyID, legacyPort := rcLegacyContainer(t, a, img, legacyName, "legacy-"+sfx)
	mapping := filepath.Join(t.TempDir(), "mapping.json")
	m, _ := json.Marshal([]map[string]string{{"account_tool_instance_id": dtma.NewUUID(), "instance_name_on_toolbox": legacyName, "docker_image_url": img}})
	if err := os.WriteFile(mapping, m, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rcMigrate(t, a, mapping, false); code != 0 {
		t.Fatalf("dtma migrate: exit %d\n%s", code, out)
	}
	// A tool deployed through DTMA after the switch.
	newName := "New Tool " + sfx
	dep := backendOK(t, a, 201, "POST", "/tools", map[string]any{"dockerImageUrl": img, "instanceNameOnToolbox": newName, "accountToolInstanceId": dtma.NewUUID()})
	newID := str(jget(dep, "data.container_id"))
	for _, name := range []string{legacyName, newName} {
		if e := statusEntry(t, backendCall(t, a, "GET", "/status", nil, false).JSON(t), name); backendtest.MapStatus(str(e["status"])) != "running" {
			t.Fatalf("%s before rollback: %v", name, e)
		}
	}

	// Rollback step 1: stop DTMA. Nothing stops.
	a.Stop()
	for _, id := range []string{legacyID, newID} {
		if ins := a.Inspect(id); ins == nil || !ins.Container.State.Running {
			t.Fatalf("container %s not running after DTMA stopped", id)
		}
	}
	if !Serves(legacyPort, "/", "legacy-"+sfx) {
		t.Fatalf("the migrated tool stopped serving")
	}
	// Step 2: the guide's list of the containers DTMA created on this host.
	f := client.Filters{}.Add("label", "dtma.managed=true").Add("label", "dtma.host="+a.HostID)
	list, err := a.Docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range list.Items {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, []string{newID}) {
		t.Fatalf("the guide's list: %v, want exactly DTMA's container %s (never the migrated %s)", ids, newID, legacyID)
	}
	// The migrated container keeps the name the legacy agent gave it.
	if ins := a.Inspect(legacyName); ins == nil || ins.Container.ID != legacyID {
		t.Fatalf("migrated container renamed or replaced")
	}

	// Switching forward again: everything is where it was, nothing restarted.
	a.Restart()
	for _, c := range []struct{ name, id string }{{legacyName, legacyID}, {newName, newID}} {
		st := backendOK(t, a, 200, "GET", "/tools/"+encodeURIComponent(c.name)+"/status", nil)
		if st["status"] != "running" || jget(st, "data.container_id") != c.id {
			t.Errorf("%s after switching forward again: %v", c.name, st)
		}
	}
}
