package health

import (
	"testing"

	"github.com/agentopia/dtma"
)

// Laying the live health over an instance never changes the instance:
// lists share the agent's own rows. An instance whose health already is
// the live one is returned as it is (no copy).
func TestOverlayNeverChangesTheRow(t *testing.T) {
	s := &Service{}
	row := &dtma.Instance{ID: dtma.NewUUID(), Name: "a", Status: dtma.StatusStopped,
		Health: dtma.HealthStatus{State: dtma.HealthHealthy, LastError: ""}}
	got := s.overlay(row)
	if got == row || got.Health != (dtma.HealthStatus{}) {
		t.Errorf("overlay of a stopped instance with a stored verdict: same object %v, health %+v; want a copy with no verdict", got == row, got.Health)
	}
	if row.Health.State != dtma.HealthHealthy {
		t.Errorf("overlay changed the row: health %+v", row.Health)
	}
	plain := &dtma.Instance{ID: dtma.NewUUID(), Name: "b", Status: dtma.StatusStopped}
	if got := s.overlay(plain); got != plain {
		t.Errorf("overlay copied an instance whose health did not change")
	}
	list := []*dtma.Instance{row, plain}
	out, _ := s.overlayAll(list, nil)
	if out[0] == row || out[1] != plain || row.Health.State != dtma.HealthHealthy {
		t.Errorf("overlayAll: %v %v, row health %+v", out[0] == row, out[1] == plain, row.Health)
	}
}
