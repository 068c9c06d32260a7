package dtma

import "context"

// InstanceFilter selects registry rows. Nil fields match everything. Unless
// AllHosts is set, only rows of the registry's own host are returned.
type InstanceFilter struct {
	ID                    *string
	Name                  *string
	AccountToolInstanceID *string
	ContainerName         *string
	AllHosts              bool
	// AfterID and Limit page through the rows: when either is set, rows
	// come in id order, only those whose id sorts after AfterID, at most
	// Limit of them (0: no bound). Ids never change, so a walk page by
	// page never returns a row twice nor skips one that existed
	// throughout.
	AfterID string
	Limit   int
}

// Registry is the persistent record of managed instances, one row per
// instance, scoped to one host id. Implementations: sqlite.Registry (the
// default) and postgres.Registry (for fleets). Every method is safe for
// concurrent use. Errors are *Error with EUNAVAILABLE when the store cannot
// be reached, so callers can answer 503.
type Registry interface {
	// HostID returns the host whose rows this registry reads and writes.
	HostID() string

	// Ping checks that the store answers. EUNAVAILABLE when it does not.
	Ping(ctx context.Context) error

	// CreateInstance inserts inst. It assigns inst.ID (a UUID) when empty,
	// sets HostID to the registry's host when empty, and CreatedAt/UpdatedAt
	// when zero. ECONFLICT when the name, the account tool instance id or the
	// container name is already used on this host, or the id exists;
	// EINVALID when inst.HostID names another host.
	CreateInstance(ctx context.Context, inst *Instance) error

	// CreateInstances inserts every instance as CreateInstance does, in one
	// transaction: all of them or none. The first failure is returned
	// (ECONFLICT naming the field and the row), and nothing is written; on
	// success each instance holds its stored values.
	CreateInstances(ctx context.Context, insts []*Instance) error

	// UpdateInstance replaces every stored field of the row with inst.ID
	// (except ID, HostID and CreatedAt) and sets inst.UpdatedAt. ENOTFOUND
	// when no such row exists on this host; ECONFLICT on a uniqueness clash.
	UpdateInstance(ctx context.Context, inst *Instance) error

	// UpdateObserved writes o into the row with the given id only when it
	// differs from what is stored, and reports whether it wrote. ENOTFOUND
	// when no such row exists on this host.
	UpdateObserved(ctx context.Context, id string, o Observed) (changed bool, err error)

	// UpdateHealth writes h's persisted part (State, LastError, ChangedAt)
	// into the row with the given id only when it differs from what is
	// stored, and reports whether it wrote. UpdateInstance leaves these
	// columns alone; reads return them in Instance.Health. ENOTFOUND when
	// no such row exists on this host.
	UpdateHealth(ctx context.Context, id string, h HealthStatus) (changed bool, err error)

	// DeleteInstance removes the row. Deleting a row that does not exist is
	// not an error (it makes remove idempotent).
	DeleteInstance(ctx context.Context, id string) error

	// FindInstanceByID returns the row with the given id on this host;
	// ENOTFOUND when there is none.
	FindInstanceByID(ctx context.Context, id string) (*Instance, error)

	// FindInstances returns the rows matching filter ordered by CreatedAt,
	// then Name.
	FindInstances(ctx context.Context, filter InstanceFilter) ([]*Instance, error)

	// Close releases the store.
	Close() error
}
