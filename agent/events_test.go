package agent

import (
	"sync"
	"testing"

	"github.com/agentopia/dtma"
)

type recordSink struct {
	mu     sync.Mutex
	events []dtma.Event
}

func (s *recordSink) Publish(e dtma.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *recordSink) words() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		w := string(e.Type) + " " + e.Name + " " + string(e.Status)
		if e.Health != "" {
			w += " " + string(e.Health)
		}
		out = append(out, w)
	}
	return out
}

// TestViewPublishesEvents: deploy, a health transition, stop and remove
// publish created/changed/removed events in order, with the transient
// statuses; an unchanged observation publishes nothing; health written
// through the view reaches the registry once per transition and survives
// the operations' writes.
func TestViewPublishesEvents(t *testing.T) {
	b := newBed(t)
	sink := &recordSink{}
	b.cfg.Events = sink
	a := b.open()
	inst, _, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "ev", Spec: testSpec()})
	if err != nil {
		t.Fatal(err)
	}
	healthy := dtma.HealthStatus{State: dtma.HealthHealthy, ChangedAt: b.clock.Now()}
	if err := a.RecordHealth(b.ctx, inst.ID, healthy); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordHealth(b.ctx, inst.ID, healthy); err != nil { // the same: no event
		t.Fatal(err)
	}
	b.relist() // nothing changed: no event
	if _, _, err := a.StopInstance(b.ctx, "ev", 0); err != nil {
		t.Fatal(err)
	}
	if got := b.mustRow("ev").Health.State; got != dtma.HealthHealthy {
		t.Errorf("the stop's writes lost the recorded health: %q", got)
	}
	if err := a.RemoveInstance(b.ctx, "ev"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"created ev deploying",
		"changed ev running",
		"changed ev running healthy",
		"changed ev stopping healthy",
		"changed ev stopped healthy",
		"changed ev removing healthy",
		"removed ev removing healthy",
	}
	got := sink.words()
	if len(got) != len(want) {
		t.Fatalf("events:\n%v\nwant:\n%v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %q, want %q", i, got[i], want[i])
		}
	}
	if err := a.RecordHealth(b.ctx, inst.ID, healthy); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Errorf("RecordHealth of a removed instance: %v", err)
	}
}

// TestRestartUnhealthyCountsTowardCrashLoop: policy restarts are Docker
// restarts for the crash-loop rule (3 within a minute on the bed).
func TestRestartUnhealthyCountsTowardCrashLoop(t *testing.T) {
	b := newBed(t)
	a := b.open()
	inst, _, err := a.Deploy(b.ctx, dtma.DeployRequest{Name: "sick", Spec: testSpec()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := a.RestartUnhealthy(b.ctx, inst.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.mustRow("sick").Status; st != dtma.StatusCrashLoop {
		t.Fatalf("after 3 policy restarts within the window: %s, want crashloop", st)
	}
}
