package agent

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestConfinement(t *testing.T) {
	a := testAgent(nil)
	a.cfg.DefaultLimits = dtma.Limits{Memory: 512 << 20, PIDs: 256, MilliCPUs: 1000}
	a.cfg.MaxLimits = dtma.Limits{Memory: 4 << 30, PIDs: 4096, MilliCPUs: 2000}
	a.cfg.Policy = &dtma.Policy{Images: []dtma.ImageRule{{Pattern: "ghcr.io/big/*", CapAdd: []string{"NET_BIND_SERVICE", "CHOWN"}, Limits: dtma.Limits{Memory: 8 << 30}}}}

	// Host defaults, minimal capabilities.
	l, caps := a.confinement(dtma.Spec{Image: "node:20"})
	if l != a.cfg.DefaultLimits || !slices.Equal(caps, dtma.DefaultCapabilities()) {
		t.Errorf("plain image: %+v %v", l, caps)
	}
	// The deploy's own override wins field by field.
	l, _ = a.confinement(dtma.Spec{Image: "node:20", Limits: dtma.Limits{PIDs: 64}})
	if l != (dtma.Limits{Memory: 512 << 20, PIDs: 64, MilliCPUs: 1000}) {
		t.Errorf("override: %+v", l)
	}
	// A policy rule replaces the default and adds capabilities (once).
	l, caps = a.confinement(dtma.Spec{Image: "ghcr.io/big/tool:1"})
	if l.Memory != 8<<30 || l.PIDs != 256 || !slices.Contains(caps, "NET_BIND_SERVICE") || len(caps) != len(dtma.DefaultCapabilities())+1 {
		t.Errorf("policy image: %+v %v", l, caps)
	}

	for _, tc := range []struct {
		spec  dtma.Spec
		field string
	}{
		{dtma.Spec{Image: "node:20", Limits: dtma.Limits{Memory: 4 << 30, PIDs: 4096, MilliCPUs: 2000}}, ""},
		{dtma.Spec{Image: "node:20", Limits: dtma.Limits{Memory: 5 << 30}}, "limits.memory"},
		{dtma.Spec{Image: "node:20", Limits: dtma.Limits{PIDs: 5000}}, "limits.pids"},
		{dtma.Spec{Image: "node:20", Limits: dtma.Limits{MilliCPUs: 2500}}, "limits.cpus"},
		{dtma.Spec{Image: "ghcr.io/big/tool:1", Limits: dtma.Limits{Memory: 8 << 30}}, ""},
		{dtma.Spec{Image: "ghcr.io/big/tool:1", Limits: dtma.Limits{Memory: 9 << 30}}, "limits.memory"},
	} {
		if err := a.checkLimits(tc.spec); dtma.ErrorField(err) != tc.field {
			t.Errorf("checkLimits(%s %+v) = %v, want field %q", tc.spec.Image, tc.spec.Limits, err, tc.field)
		}
	}
}

// A container's labels carry the deploy's limits, so a record rebuilt from
// them (registry lost) has the same spec and hash.
func TestLimitsSurviveLabels(t *testing.T) {
	a := testAgent(nil)
	spec := dtma.Spec{Image: "img:1", Limits: dtma.Limits{Memory: 256 << 20, MilliCPUs: 500}}
	inst := &dtma.Instance{ID: "id1", Name: "Tool", Spec: spec, SpecHash: spec.Hash()}
	labels := a.labelsFor(inst)
	back := instanceFromContainer(&dtma.Container{ID: "c", Name: "dtma-tool", Image: "img:1", Labels: labels}, "id1", "Tool")
	if back.Spec.Limits != spec.Limits || back.Spec.Hash() != inst.SpecHash {
		t.Errorf("rebuilt limits %+v (hash match %v), want %+v", back.Spec.Limits, back.Spec.Hash() == inst.SpecHash, spec.Limits)
	}
	plain := &dtma.Instance{ID: "id2", Name: "Plain", Spec: dtma.Spec{Image: "img:1"}}
	if _, ok := a.labelsFor(plain)[dtma.LabelLimits]; ok {
		t.Error("a deploy without limits gets a limits label")
	}
}

func TestMatchExistingLimits(t *testing.T) {
	a := testAgent(nil)
	spec := dtma.Spec{Image: "img:1", Limits: dtma.Limits{PIDs: 64}}
	a.view.rows["1"] = &dtma.Instance{ID: "1", Name: "tool", Spec: spec, SpecHash: spec.Hash()}
	if inst, err := a.matchExisting(dtma.DeployRequest{Name: "tool", Spec: spec}); err != nil || inst == nil {
		t.Fatalf("same limits: %v %v", inst, err)
	}
	_, err := a.matchExisting(dtma.DeployRequest{Name: "tool", Spec: dtma.Spec{Image: "img:1", Limits: dtma.Limits{PIDs: 128}}})
	if dtma.ErrorCode(err) != dtma.ECONFLICT || !strings.Contains(err.Error(), "limits") {
		t.Errorf("other limits: %v", err)
	}
}
