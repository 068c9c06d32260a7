package metrics

import (
	"context"
	"time"

	"github.com/agentopia/dtma"
)

// Registry decorates a dtma.Registry with latency and error series by
// operation and backend (sqlite, postgres). Every call goes to the wrapped
// registry unchanged.
type Registry struct {
	dtma.Registry
	m       *Metrics
	backend string
}

// WrapRegistry returns reg with its calls measured in m under backend.
func (m *Metrics) WrapRegistry(reg dtma.Registry, backend string) *Registry {
	return &Registry{Registry: reg, m: m, backend: backend}
}

func (r *Registry) done(op string, start time.Time, err error) {
	r.m.registryDuration.WithLabelValues(op, r.backend).Observe(time.Since(start).Seconds())
	if err != nil {
		r.m.registryErrors.WithLabelValues(op, r.backend, dtma.ErrorCode(err)).Inc()
	}
}

func (r *Registry) Ping(ctx context.Context) error {
	start := time.Now()
	err := r.Registry.Ping(ctx)
	r.done("ping", start, err)
	return err
}

func (r *Registry) CreateInstance(ctx context.Context, inst *dtma.Instance) error {
	start := time.Now()
	err := r.Registry.CreateInstance(ctx, inst)
	r.done("create", start, err)
	return err
}

func (r *Registry) UpdateInstance(ctx context.Context, inst *dtma.Instance) error {
	start := time.Now()
	err := r.Registry.UpdateInstance(ctx, inst)
	r.done("update", start, err)
	return err
}

func (r *Registry) UpdateObserved(ctx context.Context, id string, o dtma.Observed) (bool, error) {
	start := time.Now()
	changed, err := r.Registry.UpdateObserved(ctx, id, o)
	r.done("update_observed", start, err)
	return changed, err
}

func (r *Registry) UpdateHealth(ctx context.Context, id string, h dtma.HealthStatus) (bool, error) {
	start := time.Now()
	changed, err := r.Registry.UpdateHealth(ctx, id, h)
	r.done("update_health", start, err)
	return changed, err
}

func (r *Registry) DeleteInstance(ctx context.Context, id string) error {
	start := time.Now()
	err := r.Registry.DeleteInstance(ctx, id)
	r.done("delete", start, err)
	return err
}

func (r *Registry) FindInstanceByID(ctx context.Context, id string) (*dtma.Instance, error) {
	start := time.Now()
	inst, err := r.Registry.FindInstanceByID(ctx, id)
	r.done("find_by_id", start, err)
	return inst, err
}

func (r *Registry) FindInstances(ctx context.Context, f dtma.InstanceFilter) ([]*dtma.Instance, error) {
	start := time.Now()
	list, err := r.Registry.FindInstances(ctx, f)
	r.done("find", start, err)
	return list, err
}
