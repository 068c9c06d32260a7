package registrytest

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Operation names passed to a Memory's failure hook (SetFail), one per
// dtma.Registry method.
const (
	OpPing             = "Ping"
	OpCreateInstance   = "CreateInstance"
	OpUpdateInstance   = "UpdateInstance"
	OpUpdateObserved   = "UpdateObserved"
	OpUpdateHealth     = "UpdateHealth"
	OpDeleteInstance   = "DeleteInstance"
	OpFindInstanceByID = "FindInstanceByID"
	OpFindInstances    = "FindInstances"
)

// Memory is an in-memory dtma.Registry that keeps every promise the
// conformance suite checks (Run passes against it), for tests of code that
// uses a registry: the agent's unit tests, for one. It is safe for
// concurrent use. Rows live in a store shared by the handles ForHost
// returns, so that two hosts' rows can sit in one store, as in a PostgreSQL
// fleet.
//
// Failures are injected with SetFail: the hook is asked before every
// method and its error is returned instead of doing anything, which makes
// the registry look down (return a dtma.EUNAVAILABLE error for that) or
// refuse a write.
type Memory struct {
	store *memStore
	host  string

	mu     sync.Mutex
	closed bool
	fail   func(op string) error
}

var _ dtma.Registry = (*Memory)(nil)

type memStore struct {
	mu   sync.Mutex
	rows map[string]*dtma.Instance
}

// NewMemory returns an empty in-memory registry for hostID.
func NewMemory(hostID string) *Memory {
	return &Memory{store: &memStore{rows: map[string]*dtma.Instance{}}, host: hostID}
}

// ForHost returns a handle on the same store for another host id, with its
// own failure hook and its own Close.
func (r *Memory) ForHost(hostID string) *Memory {
	return &Memory{store: r.store, host: hostID}
}

// SetFail installs fail, which is called with the method name (the Op*
// constants) before every method of this handle; a non-nil error is
// returned as the method's error and the method does nothing. nil removes
// the hook. Unavailable is the usual hook.
func (r *Memory) SetFail(fail func(op string) error) {
	r.mu.Lock()
	r.fail = fail
	r.mu.Unlock()
}

// Unavailable is a failure hook that makes every method fail with
// EUNAVAILABLE, as a registry whose database is down does.
func Unavailable(op string) error {
	return dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable (%s)", op)
}

// HostID implements dtma.Registry.
func (r *Memory) HostID() string { return r.host }

func (r *Memory) check(op string) error {
	r.mu.Lock()
	closed, fail := r.closed, r.fail
	r.mu.Unlock()
	if closed {
		return dtma.Errorf(dtma.EUNAVAILABLE, "registry is closed")
	}
	if fail != nil {
		return fail(op)
	}
	return nil
}

// Ping implements dtma.Registry.
func (r *Memory) Ping(context.Context) error { return r.check(OpPing) }

// Close implements dtma.Registry: this handle fails with EUNAVAILABLE from
// now on; the store and other handles are unaffected.
func (r *Memory) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func memNow() time.Time { return dtma.RegistryTime(time.Now()) }

// clash returns a conflict error when inst's keys are taken by another row
// of its host.
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

// CreateInstance implements dtma.Registry.
func (r *Memory) CreateInstance(_ context.Context, inst *dtma.Instance) error {
	if err := r.check(OpCreateInstance); err != nil {
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
	t := memNow()
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
	row := Normalize(inst)
	row.Health = dtma.HealthStatus{} // written by UpdateHealth only
	r.store.rows[inst.ID] = row
	return nil
}

// CreateInstances implements dtma.Registry: every instance or none.
func (r *Memory) CreateInstances(ctx context.Context, insts []*dtma.Instance) error {
	if err := r.check(OpCreateInstance); err != nil {
		return err
	}
	// Try them on a copy of the store; keep it only when all went in.
	r.store.mu.Lock()
	saved := make(map[string]*dtma.Instance, len(r.store.rows))
	for k, v := range r.store.rows {
		saved[k] = v
	}
	r.store.mu.Unlock()
	copies := make([]*dtma.Instance, len(insts))
	for i, inst := range insts {
		copies[i] = inst.Clone()
		if err := r.CreateInstance(ctx, copies[i]); err != nil {
			r.store.mu.Lock()
			r.store.rows = saved
			r.store.mu.Unlock()
			return err
		}
	}
	for i, c := range copies {
		*insts[i] = *c
	}
	return nil
}

// UpdateInstance implements dtma.Registry.
func (r *Memory) UpdateInstance(_ context.Context, inst *dtma.Instance) error {
	if err := r.check(OpUpdateInstance); err != nil {
		return err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	old, ok := r.store.rows[inst.ID]
	if !ok || old.HostID != r.host {
		return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", inst.ID)
	}
	c := Normalize(inst)
	c.HostID, c.CreatedAt, c.UpdatedAt = old.HostID, old.CreatedAt, memNow()
	c.Health = old.Health // UpdateInstance leaves health alone
	if err := r.store.clash(c); err != nil {
		return err
	}
	r.store.rows[inst.ID] = c
	inst.UpdatedAt = c.UpdatedAt
	return nil
}

// UpdateObserved implements dtma.Registry.
func (r *Memory) UpdateObserved(_ context.Context, id string, o dtma.Observed) (bool, error) {
	return r.updateIfChanged(OpUpdateObserved, id, func(c *dtma.Instance) { c.Observed = o },
		func(a, b *dtma.Instance) bool { return a.Observed == b.Observed })
}

// UpdateHealth implements dtma.Registry.
func (r *Memory) UpdateHealth(_ context.Context, id string, h dtma.HealthStatus) (bool, error) {
	return r.updateIfChanged(OpUpdateHealth, id, func(c *dtma.Instance) { c.Health = h },
		func(a, b *dtma.Instance) bool { return a.Health == b.Health })
}

// updateIfChanged applies set to a copy of row id in its stored form and
// writes it (stamping UpdatedAt) only when same reports a difference from
// the stored row, as the stores' UpdateObserved and UpdateHealth do.
// ENOTFOUND when this host has no such row.
func (r *Memory) updateIfChanged(op, id string, set func(*dtma.Instance), same func(a, b *dtma.Instance) bool) (bool, error) {
	if err := r.check(op); err != nil {
		return false, err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	old, ok := r.store.rows[id]
	if !ok || old.HostID != r.host {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	probe := old.Clone()
	set(probe)
	probe = Normalize(probe)
	if same(probe, old) {
		return false, nil
	}
	probe.UpdatedAt = memNow()
	r.store.rows[id] = probe
	return true, nil
}

// DeleteInstance implements dtma.Registry.
func (r *Memory) DeleteInstance(_ context.Context, id string) error {
	if err := r.check(OpDeleteInstance); err != nil {
		return err
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if old, ok := r.store.rows[id]; ok && old.HostID == r.host {
		delete(r.store.rows, id)
	}
	return nil
}

// FindInstanceByID implements dtma.Registry.
func (r *Memory) FindInstanceByID(_ context.Context, id string) (*dtma.Instance, error) {
	if err := r.check(OpFindInstanceByID); err != nil {
		return nil, err
	}
	rows := r.find(dtma.InstanceFilter{ID: &id})
	if len(rows) == 0 {
		return nil, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	return rows[0], nil
}

// FindInstances implements dtma.Registry.
func (r *Memory) FindInstances(_ context.Context, f dtma.InstanceFilter) ([]*dtma.Instance, error) {
	if err := r.check(OpFindInstances); err != nil {
		return nil, err
	}
	return r.find(f), nil
}

func (r *Memory) find(f dtma.InstanceFilter) []*dtma.Instance {
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
	if f.AfterID != "" || f.Limit > 0 {
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		after := strings.ToLower(f.AfterID)
		start := sort.Search(len(out), func(i int) bool { return out[i].ID > after })
		out = out[start:]
		if f.Limit > 0 && len(out) > f.Limit {
			out = out[:f.Limit]
		}
		return out
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out
}
