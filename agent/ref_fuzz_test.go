package agent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// FuzzFindInstance: ref resolution never panics, finds an instance
// whenever one matches the ref by name, account id or id, and only
// returns one that matches by one of them; ENOTFOUND otherwise.
func FuzzFindInstance(f *testing.F) {
	for _, s := range []struct{ name, ref string }{
		{"weather", "weather"},
		{"Context7 MCP Server-1", "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"},
		{"6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10", "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"},
		{"x", "11111111-2222-4333-8444-555555555555"},
		{"name with space", "name%20with%20space"},
		{"", ""},
	} {
		f.Add(s.name, s.ref)
	}
	f.Fuzz(func(t *testing.T, name, ref string) {
		a := testAgent(nil)
		insts := []*dtma.Instance{
			{ID: "11111111-2222-4333-8444-555555555555", Name: name, AccountToolInstanceID: "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"},
			{ID: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", Name: "weather"},
			{ID: strings.ToLower(name), Name: "by-id " + name},
		}
		for _, inst := range insts {
			a.view.rows[inst.ID] = inst
		}
		matches := func(inst *dtma.Instance) bool {
			lower := strings.ToLower(ref)
			return inst.Name == ref || (inst.AccountToolInstanceID != "" && inst.AccountToolInstanceID == lower) || inst.ID == lower
		}
		any := false
		for _, inst := range a.view.rows {
			any = any || matches(inst)
		}
		got, err := a.FindInstance(context.Background(), ref)
		switch {
		case err != nil && dtma.ErrorCode(err) != dtma.ENOTFOUND:
			t.Fatalf("FindInstance(%q): %v", ref, err)
		case err == nil && !matches(got):
			t.Fatalf("FindInstance(%q) returned %q (id %s), which it does not name", ref, got.Name, got.ID)
		case err != nil && any:
			t.Fatalf("FindInstance(%q) found nothing though an instance matches", ref)
		}
	})
}

// FuzzInstanceFromContainer: rebuilding a row from a container's labels
// (env names, requested ports as JSON, spec hash, account id) never panics,
// takes env values only from the container's own env and only for the
// names the label lists, and always yields a spec hash.
func FuzzInstanceFromContainer(f *testing.F) {
	f.Add("API_KEY,URL", `[{"container_port":8080,"protocol":"tcp","host_port":31000}]`, "", "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10", "API_KEY", "v")
	f.Add("", `null`, "abc", "", "", "")
	f.Add(",,,", `[{"container_port":"x"}]`, "", "x", "A", "b=c")
	f.Add("A", `{`, "", "", "B", "v")
	f.Fuzz(func(t *testing.T, envNames, ports, hash, acct, envKey, envVal string) {
		c := &dtma.Container{
			ID: "c1", Name: "dtma-x", Image: "img",
			Labels: map[string]string{dtma.LabelEnvNames: envNames, dtma.LabelPorts: ports, dtma.LabelSpecHash: hash, dtma.LabelAccountID: acct},
			Env:    map[string]string{envKey: envVal},
		}
		inst := instanceFromContainer(c, "id", "name")
		listed := map[string]bool{}
		for _, n := range strings.Split(envNames, ",") {
			listed[n] = true
		}
		for k, v := range inst.Spec.Env {
			if !listed[k] || c.Env[k] != v {
				t.Fatalf("env %q=%q is not the container's listed env", k, v)
			}
		}
		if inst.SpecHash == "" {
			t.Fatal("no spec hash")
		}
		if _, err := json.Marshal(inst.Spec.Ports); err != nil {
			t.Fatalf("ports do not marshal: %v", err)
		}
	})
}
