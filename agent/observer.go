package agent

import (
	"context"
	"time"

	"github.com/agentopia/dtma"
)

// Observer is told of the reconciler's work, for metrics. Its methods are
// called from the reconciler's goroutines and must not block.
type Observer interface {
	Relisted(d time.Duration, drift int) // a relist finished: how long it took, instances in drift after it
	Recreated()                          // a vanished container was recreated from its stored spec
	Adopted()                            // a labelled container was adopted
	Removed()                            // the reconciler removed a container (an interrupted remove, a never-started leftover)
	Resubscribed()                       // the Docker event stream broke and was subscribed again
}

type nopObserver struct{}

func (nopObserver) Relisted(time.Duration, int) {}
func (nopObserver) Recreated()                  {}
func (nopObserver) Adopted()                    {}
func (nopObserver) Removed()                    {}
func (nopObserver) Resubscribed()               {}

// RecordHealth records an instance's health as the prober concluded it
// (health.Monitor's Record): through the view, which writes the registry
// only when the state, last error or time of change differ, and publishes
// the change. ENOTFOUND when the instance is gone.
func (a *Agent) RecordHealth(ctx context.Context, id string, st dtma.HealthStatus) error {
	return a.view.writeHealth(ctx, id, st)
}

// RestartUnhealthy restarts an instance whose health check failed (the
// on_unhealthy: restart policy). The restart counts in the crash-loop
// history like one by Docker's restart policy: an instance the policy keeps
// restarting becomes crashloop.
func (a *Agent) RestartUnhealthy(ctx context.Context, id string) error {
	inst := a.view.get(id)
	if inst == nil {
		return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	a.restarts.note(id, 1)
	_, err := a.RestartInstance(ctx, id)
	return err
}
