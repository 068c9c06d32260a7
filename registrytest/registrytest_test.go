package registrytest_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
)

// The suite is checked against a minimal in-memory registry that keeps
// every promise, so that a failure of a real implementation points at the
// implementation rather than the suite.

type memStore struct {
	mu   sync.Mutex
	rows map[string]*dtma.Instance
}

type memRegistry struct {
	store  *memStore
	host   string
	mu     sync.Mutex
	closed bool
}

func (r *memRegistry) HostID() string { return r.host }

func (r *memRegistry) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return dtma.Errorf(dtma.EUNAVAILABLE, "registry is closed")
	}
	return nil
}

func (r *memRegistry) Ping(context.Context) error { return r.check() }

func (r *memRegistry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// clash returns a conflict error when inst's keys are taken by another row.
func (s *memStore) clash(inst *dtma.Instance) error {
	for _, row := range s.rows {
		if row.ID == inst.ID || row.HostID != inst.HostID {
			continue
		}
		switch {
		case row.Name == inst.Name:
			return dtma.FieldErrorf(dtma.ECONFLICT, "name", "%q is already used", inst.Name)
		case row.ContainerName == inst.ContainerName:
			return dtma.FieldErrorf(dtma.ECONFLICT, "container_name", "%q is already used", inst.ContainerName)
		case inst.AccountToolInstanceID != "" && row.AccountToolInstanceID == inst.AccountToolInstanceID:
			return dtma.FieldErrorf(dtma.ECONFLICT, "account_tool_instance_id", "%q is already used", inst.AccountToolInstanceID)
		}
	}
	return nil
}

func (r *memRegistry) CreateInstance(_ context.Context, inst *dtma.Instance) error {
	if err := r.check(); err != nil {
		return err
	}
	if inst.HostID == "" {
		inst.HostID = r.host
	} else if inst.HostID != r.host {
		return dtma.FieldErrorf(dtma.EINVALID, "host_id", "belongs to another host")
	}
	if inst.ID == "" {
		inst.ID = dtma.NewUUID()
	}
	t := now()
	if inst.CreatedAt.IsZero() {
		inst.CreatedAt = t
	}
	if inst.UpdatedAt.IsZero() {
		inst.UpdatedAt = t
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if _, ok := r.store.rows[inst.ID]; ok {
		return dtma.FieldErrorf(dtma.ECONFLICT, "id", "%q is already used", inst.ID)
	}
	if err := r.store.clash(inst); err != nil {
		return err
	}
	r.store.rows[inst.ID] = registrytest.Normalize(inst)
	return nil
}

func (r *memRegistry) UpdateInstance(_ context.Context, inst *dtma.Instance) error {
	if err := r.check(); err != nil {
		return err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	old, ok := r.store.rows[inst.ID]
	if !ok || old.HostID != r.host {
		return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", inst.ID)
	}
	c := registrytest.Normalize(inst)
	c.HostID, c.CreatedAt, c.UpdatedAt = old.HostID, old.CreatedAt, now()
	if err := r.store.clash(c); err != nil {
		return err
	}
	r.store.rows[inst.ID] = c
	inst.UpdatedAt = c.UpdatedAt
	return nil
}

func (r *memRegistry) UpdateObserved(_ context.Context, id string, o dtma.Observed) (bool, error) {
	if err := r.check(); err != nil {
		return false, err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	old, ok := r.store.rows[id]
	if !ok || old.HostID != r.host {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	probe := old.Clone()
	probe.Observed = o
	probe = registrytest.Normalize(probe)
	if probe.Observed == old.Observed {
		return false, nil
	}
	probe.UpdatedAt = now()
	r.store.rows[id] = probe
	return true, nil
}

func (r *memRegistry) DeleteInstance(_ context.Context, id string) error {
	if err := r.check(); err != nil {
		return err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if old, ok := r.store.rows[id]; ok && old.HostID == r.host {
		delete(r.store.rows, id)
	}
	return nil
}

func (r *memRegistry) FindInstanceByID(ctx context.Context, id string) (*dtma.Instance, error) {
	rows, err := r.FindInstances(ctx, dtma.InstanceFilter{ID: &id})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	return rows[0], nil
}

func (r *memRegistry) FindInstances(_ context.Context, f dtma.InstanceFilter) ([]*dtma.Instance, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	match := func(p *string, v string) bool { return p == nil || *p == v }
	var out []*dtma.Instance
	for _, row := range r.store.rows {
		if (f.AllHosts || row.HostID == r.host) && match(f.ID, row.ID) && match(f.Name, row.Name) &&
			(f.AccountToolInstanceID == nil || (row.AccountToolInstanceID != "" && *f.AccountToolInstanceID == row.AccountToolInstanceID)) &&
			match(f.ContainerName, row.ContainerName) {
			out = append(out, row.Clone())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// memOpener returns an open function keeping one store per test.
func memOpener[T testing.TB]() func(t T, hostID string) dtma.Registry {
	var mu sync.Mutex
	stores := map[testing.TB]*memStore{}
	return func(t T, hostID string) dtma.Registry {
		mu.Lock()
		s, ok := stores[t]
		if !ok {
			s = &memStore{rows: map[string]*dtma.Instance{}}
			stores[t] = s
		}
		mu.Unlock()
		r := &memRegistry{store: s, host: hostID}
		t.Cleanup(func() { r.Close() })
		return r
	}
}

func TestMemoryRegistry(t *testing.T) {
	registrytest.Run(t, memOpener[*testing.T]())
}

func BenchmarkMemoryRegistry(b *testing.B) {
	registrytest.Bench(b, memOpener[*testing.B]())
}
