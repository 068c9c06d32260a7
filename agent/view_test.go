package agent

import (
	"io"
	"log/slog"
	"testing"

	"github.com/agentopia/dtma"
)

// Every change of a row in the view gives it a new, higher Revision; reads
// of an unchanged row give the same one (the list's cache of encoded rows
// relies on both).
func TestViewRevisions(t *testing.T) {
	v := newView(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a := &dtma.Instance{ID: dtma.NewUUID(), Name: "a", Status: dtma.StatusRunning}
	b := &dtma.Instance{ID: dtma.NewUUID(), Name: "b", Status: dtma.StatusRunning}
	v.load(a, false)
	v.load(b, false)
	ra, rb := v.get(a.ID).Revision, v.get(b.ID).Revision
	if ra == 0 || rb == 0 || ra == rb {
		t.Fatalf("revisions after load: %d, %d; want distinct, non-zero", ra, rb)
	}
	if r := v.get(a.ID).Revision; r != ra {
		t.Errorf("a read changed the revision: %d, then %d", ra, r)
	}
	for _, inst := range v.shared() {
		if want := map[string]uint64{a.ID: ra, b.ID: rb}[inst.ID]; inst.Revision != want {
			t.Errorf("shared: %s has revision %d, want %d", inst.Name, inst.Revision, want)
		}
	}
	c := v.get(a.ID)
	c.Status = dtma.StatusStopped
	v.remember(c)
	if got := v.get(a.ID); got.Revision <= rb || got.Status != dtma.StatusStopped {
		t.Errorf("after a change: revision %d (before %d, latest other %d), status %s", got.Revision, ra, rb, got.Status)
	}
	if r := v.get(b.ID).Revision; r != rb {
		t.Errorf("another row's change moved b's revision: %d → %d", rb, r)
	}
}

// The rows a list shares are the view's own and are never changed: a
// change stores a new row, so a list taken before it still reads the old
// values, and an unchanged row is the same object in the next list (no
// copy per list).
func TestSharedRowsNeverChanged(t *testing.T) {
	v := newView(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a := &dtma.Instance{ID: dtma.NewUUID(), Name: "a", Status: dtma.StatusRunning, Ports: []dtma.Port{{ContainerPort: 80, HostPort: 30000, Protocol: "tcp"}}}
	b := &dtma.Instance{ID: dtma.NewUUID(), Name: "b", Status: dtma.StatusRunning}
	v.load(a, false)
	v.load(b, false)
	before := v.shared()
	if len(before) != 2 {
		t.Fatalf("%d rows shared, want 2", len(before))
	}
	old := map[string]*dtma.Instance{}
	for _, inst := range before {
		old[inst.ID] = inst.Clone()
	}
	c := v.get(a.ID)
	c.Status = dtma.StatusStopped
	c.Ports[0].HostPort = 30001
	v.remember(c)
	for _, inst := range before {
		if inst.Status != old[inst.ID].Status || inst.Revision != old[inst.ID].Revision || (len(inst.Ports) > 0 && inst.Ports[0].HostPort != 30000) {
			t.Errorf("a shared row of %s changed under its reader: %+v", inst.Name, inst)
		}
	}
	after := v.shared()
	for i, inst := range after {
		switch inst.ID {
		case a.ID:
			if inst == before[i] || inst.Status != dtma.StatusStopped || inst.Ports[0].HostPort != 30001 {
				t.Errorf("the changed row: same object %v, status %s, port %d", inst == before[i], inst.Status, inst.Ports[0].HostPort)
			}
		case b.ID:
			if inst != before[i] {
				t.Errorf("the unchanged row was copied for the list")
			}
		}
	}
}
