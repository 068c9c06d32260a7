package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// view is the agent's in-memory copy of its host's registry rows: every
// read is served from it, and it is the only writer of rows — intent,
// outcome and observation go to the registry first and then to the view.
// Rows the registry could not take are kept dirty (or, for deletions, in
// deleted) until flush writes them. It has its own lock, held only for
// memory access, never across a registry or Docker call. Every method
// hands out and takes copies.
type view struct {
	reg    dtma.Registry
	health *health
	log    *slog.Logger
	events dtma.EventSink // nil: none

	mu   sync.RWMutex
	rows map[string]*dtma.Instance // by ID
	// Indexes of rows, kept by put and del: the id of the row with that
	// name, account tool instance id, container id. Lookups are map
	// reads, whatever the number of rows.
	byName, byAcct, byContainer map[string]string
	// rev is the Revision the latest stored row was given.
	rev uint64
	// dirty holds rows whose latest state could not be written (registry
	// down); deleted holds ids whose row must still be deleted.
	dirty   map[string]bool
	deleted map[string]bool

	// changed, when set, is called after every change of a row (it must
	// not block): the stdio bridges follow the rows.
	changed func()
}

func (v *view) notify() {
	if v.changed != nil {
		v.changed()
	}
}

func newView(reg dtma.Registry, h *health, log *slog.Logger) *view {
	return &view{reg: reg, health: h, log: log,
		rows: map[string]*dtma.Instance{}, dirty: map[string]bool{}, deleted: map[string]bool{},
		byName: map[string]string{}, byAcct: map[string]string{}, byContainer: map[string]string{}}
}

// store makes c (owned by the view from now on, never changed again: a
// change stores a new copy) the row of its id, gives it the next
// Revision and indexes it. Caller holds mu.
func (v *view) store(c *dtma.Instance) {
	v.unstore(c.ID)
	v.rev++
	c.Revision = v.rev
	v.rows[c.ID] = c
	v.byName[c.Name] = c.ID
	if c.AccountToolInstanceID != "" {
		v.byAcct[c.AccountToolInstanceID] = c.ID
	}
	if c.ContainerID != "" {
		v.byContainer[c.ContainerID] = c.ID
	}
}

// unstore removes the row id and its index entries. Caller holds mu.
func (v *view) unstore(id string) {
	old := v.rows[id]
	if old == nil {
		return
	}
	delete(v.rows, id)
	for m, k := range map[*map[string]string]string{&v.byName: old.Name, &v.byAcct: old.AccountToolInstanceID, &v.byContainer: old.ContainerID} {
		if k != "" && (*m)[k] == id {
			delete(*m, k)
		}
	}
}

// load puts rows read from the registry into the view; stale marks them
// dirty, so that flush writes them back.
func (v *view) load(inst *dtma.Instance, stale bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.store(inst.Clone())
	if stale {
		v.dirty[inst.ID] = true
	}
}

// shared returns the view's own rows, oldest first, without copying them:
// a stored row is never changed (a change stores a new copy), so the rows
// may be read after the lock is released — and must never be written. For
// readers (lists, counts, port and name checks); a caller that changes an
// instance takes a copy with get.
func (v *view) shared() []*dtma.Instance {
	v.mu.RLock()
	out := make([]*dtma.Instance, 0, len(v.rows))
	for _, inst := range v.rows {
		out = append(out, inst)
	}
	v.mu.RUnlock()
	sortInstances(out)
	return out
}

func sortInstances(list []*dtma.Instance) {
	sort.Slice(list, func(i, j int) bool {
		if !list[i].CreatedAt.Equal(list[j].CreatedAt) {
			return list[i].CreatedAt.Before(list[j].CreatedAt)
		}
		return list[i].Name < list[j].Name
	})
}

// get returns a copy of the instance with that id, or nil.
func (v *view) get(id string) *dtma.Instance {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rows[id].Clone()
}

// lookup finds an instance by ref, in this order: the instance id, then
// the account tool instance id (both UUIDs, compared case-insensitively),
// then the name (exact). New names cannot have the shape of a UUID
// (dtma.ValidateName), so the three spaces cannot collide for rows created
// now; a row stored earlier under a UUID-shaped name still resolves by that
// name when no id or account id matches, and can no longer capture another
// instance's id or account id. It returns a copy or nil.
func (v *view) lookup(ref string) *dtma.Instance {
	v.mu.RLock()
	defer v.mu.RUnlock()
	lower := strings.ToLower(ref)
	if inst := v.rows[lower]; inst != nil {
		return inst.Clone()
	}
	if id, ok := v.byAcct[lower]; ok {
		return v.rows[id].Clone()
	}
	if id, ok := v.byName[ref]; ok {
		return v.rows[id].Clone()
	}
	return nil
}

// find is lookup with ENOTFOUND.
func (v *view) find(ref string) (*dtma.Instance, error) {
	if inst := v.lookup(ref); inst != nil {
		return inst, nil
	}
	return nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q on this host", ref)
}

// byNameOrAccount returns copies of the instance named name and of the one
// with account tool instance id acct ("" matches none); either may be nil.
func (v *view) byNameOrAccount(name, acct string) (byName, byAcct *dtma.Instance) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if id, ok := v.byName[name]; ok {
		byName = v.rows[id].Clone()
	}
	if id, ok := v.byAcct[acct]; ok && acct != "" {
		byAcct = v.rows[id].Clone()
	}
	return byName, byAcct
}

// forContainer returns a copy of the instance with id instanceID, else of
// the one whose container is containerID, or nil.
func (v *view) forContainer(containerID, instanceID string) *dtma.Instance {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if inst := v.rows[instanceID]; inst != nil {
		return inst.Clone()
	}
	if id, ok := v.byContainer[containerID]; ok && containerID != "" {
		return v.rows[id].Clone()
	}
	return nil
}

// put stores a copy of inst as the row and publishes the change an event
// shows (status, docker status, health, drift; creation). inst's Health is
// the view's own: only writeHealth changes it. Caller holds v.mu.
func (v *view) put(inst *dtma.Instance) {
	old := v.rows[inst.ID]
	c := inst.Clone()
	if old != nil {
		c.Health = old.Health
	}
	v.store(c)
	v.publish(old, c)
}

// publish sends the event between before and after, if any. Caller holds
// v.mu, so events leave in the order the view changed.
func (v *view) publish(before, after *dtma.Instance) {
	if v.events == nil {
		return
	}
	if e, ok := dtma.InstanceEvent(before, after, nowUTC()); ok {
		v.events.Publish(e)
	}
}

// writeHealth records the health of instance id: the registry is written
// only when its persisted part changed (UpdateHealth compares), the view
// always takes it and publishes the change. ENOTFOUND when the row is not
// in the view; the registry's error otherwise (the next transition writes
// again).
func (v *view) writeHealth(ctx context.Context, id string, st dtma.HealthStatus) error {
	if v.get(id) == nil {
		return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	_, err := v.reg.UpdateHealth(ctx, id, st)
	v.health.noteRegistry(err)
	v.mu.Lock()
	if old := v.rows[id]; old != nil {
		c := old.Clone()
		c.Health = dtma.HealthStatus{State: st.State, LastError: st.LastError, ChangedAt: st.ChangedAt}
		v.store(c)
		v.publish(old, c)
	}
	v.mu.Unlock()
	return err
}

// remember stores a copy of inst in memory only: for what the registry
// does not keep (ObservedAt) or has just stored.
func (v *view) remember(inst *dtma.Instance) {
	v.mu.Lock()
	v.put(inst)
	v.mu.Unlock()
}

// create inserts inst into the registry (which sets HostID, CreatedAt and
// UpdatedAt on it) and then into the view. The
// registry's error (ECONFLICT, EUNAVAILABLE, ...) is returned and the view
// is left unchanged.
func (v *view) create(ctx context.Context, inst *dtma.Instance) error {
	err := v.reg.CreateInstance(ctx, inst)
	v.health.noteRegistry(err)
	if err != nil {
		return err
	}
	v.remember(inst)
	v.notify()
	return nil
}

// createMany inserts insts into the registry in one transaction (all or
// none; see dtma.Registry.CreateInstances) and then into the view. The
// registry's error is returned and the view is left unchanged.
func (v *view) createMany(ctx context.Context, insts []*dtma.Instance) error {
	err := v.reg.CreateInstances(ctx, insts)
	v.health.noteRegistry(err)
	if err != nil {
		return err
	}
	v.mu.Lock()
	for _, inst := range insts {
		v.put(inst)
	}
	v.mu.Unlock()
	v.notify()
	return nil
}

// writeIntent records inst (an operation about to start) in the registry
// and the view. The registry's error is returned wrapped, the view left
// unchanged: the operation must not proceed.
func (v *view) writeIntent(ctx context.Context, inst *dtma.Instance) error {
	if err := v.reg.UpdateInstance(ctx, inst); err != nil {
		v.health.noteRegistry(err)
		return fmt.Errorf("record intent for %s: %w", inst.Name, err)
	}
	v.health.noteRegistry(nil)
	v.mu.Lock()
	v.put(inst)
	delete(v.dirty, inst.ID)
	v.mu.Unlock()
	v.notify()
	return nil
}

// writeOutcome records inst after Docker acted. The view always takes it
// (it is what Docker now shows); when the registry cannot be written the
// row is marked dirty and written by flush once the registry is back.
func (v *view) writeOutcome(ctx context.Context, inst *dtma.Instance) {
	err := v.reg.UpdateInstance(ctx, inst)
	v.health.noteRegistry(err)
	v.mu.Lock()
	v.put(inst)
	if err != nil {
		v.dirty[inst.ID] = true
	} else {
		delete(v.dirty, inst.ID)
	}
	v.mu.Unlock()
	if err != nil {
		v.log.Error("record outcome; will retry", "instance", inst.Name, "err", err)
	}
	v.notify()
}

// writeObserved records inst whose observed fields (inst.Observed) changed
// and nothing else: only those columns are written. The view always takes
// inst; when the registry cannot be written the row is marked dirty.
func (v *view) writeObserved(ctx context.Context, inst *dtma.Instance) {
	wrote, err := v.reg.UpdateObserved(ctx, inst.ID, inst.Observed)
	v.health.noteRegistry(err)
	if wrote {
		inst.UpdatedAt = nowUTC().Truncate(time.Microsecond) // as the registry stamped it, to the microsecond's noise
	}
	v.mu.Lock()
	v.put(inst)
	if err != nil {
		v.dirty[inst.ID] = true
	}
	v.mu.Unlock()
	v.notify()
}

// drop deletes the row and the view entry; when the registry cannot be
// written the deletion is retried by flush.
func (v *view) drop(ctx context.Context, inst *dtma.Instance) {
	err := v.reg.DeleteInstance(ctx, inst.ID)
	v.health.noteRegistry(err)
	v.mu.Lock()
	if old := v.rows[inst.ID]; old != nil {
		v.publish(old, nil)
	}
	v.unstore(inst.ID)
	delete(v.dirty, inst.ID)
	if err != nil {
		v.deleted[inst.ID] = true
	}
	v.mu.Unlock()
	if err != nil {
		v.log.Error("delete record; will retry", "instance", inst.Name, "err", err)
	}
	v.notify()
}

// pending returns the ids of dirty rows and of deletions still owed to the
// registry.
func (v *view) pending() (dirty, deleted []string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for id := range v.dirty {
		dirty = append(dirty, id)
	}
	for id := range v.deleted {
		deleted = append(deleted, id)
	}
	return dirty, deleted
}

// retryDelete deletes a row whose deletion failed earlier; it returns the
// registry's error, and forgets the id once deleted.
func (v *view) retryDelete(ctx context.Context, id string) error {
	err := v.reg.DeleteInstance(ctx, id)
	v.health.noteRegistry(err)
	if err != nil {
		return err
	}
	v.mu.Lock()
	delete(v.deleted, id)
	v.mu.Unlock()
	return nil
}

// retryWrite writes the dirty row id as the view has it (creating it when
// the registry lost it) and reports whether it was written. A row no
// longer in the view is just forgotten. Caller holds the instance's lock.
func (v *view) retryWrite(ctx context.Context, id string) bool {
	inst := v.get(id)
	if inst == nil {
		v.mu.Lock()
		delete(v.dirty, id)
		v.mu.Unlock()
		return false
	}
	err := v.reg.UpdateInstance(ctx, inst)
	if dtma.ErrorCode(err) == dtma.ENOTFOUND {
		err = v.reg.CreateInstance(ctx, inst)
	}
	v.health.noteRegistry(err)
	if err != nil {
		return false
	}
	v.mu.Lock()
	delete(v.dirty, id)
	v.mu.Unlock()
	v.log.Info("caught up registry row", "instance", inst.Name)
	return true
}
