package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Names of the unique constraints and indexes, for conflict messages.
const (
	constraintID            = "dtma_container_registry_pkey"
	constraintName          = "dtma_container_registry_host_name_key"
	constraintContainerName = "dtma_container_registry_host_container_name_key"
	constraintAccount       = "dtma_container_registry_host_account_key"
)

// selectColumns is what scanInstance reads, in its order.
const selectColumns = `id::text, host_id, name, COALESCE(account_tool_instance_id::text, ''), container_name,
	spec, spec_hash, ports, desired_state, dtma_status, pending_op, tracking, last_error,
	COALESCE(docker_status, ''), COALESCE(container_id, ''), started_at, finished_at, exit_code, restart_count,
	created_at, updated_at, health_state, health_error, health_changed_at`

// CreateInstance inserts inst. It assigns inst.ID (a UUID) when empty, sets
// inst.HostID to the registry's host when empty and CreatedAt/UpdatedAt to
// now when zero; times are kept in UTC at microsecond precision and
// inst's are set to the stored values. ECONFLICT (naming the field) when
// the name, the account tool instance id or the container name is already
// used on this host, or the id exists on any host; EINVALID when
// inst.HostID names another host, or the id or account tool instance id is
// not a UUID; EUNAVAILABLE when the database cannot be reached.
func (r *Registry) CreateInstance(ctx context.Context, inst *dtma.Instance) error {
	var done func()
	err := r.do(ctx, "create instance", func(ctx context.Context) error {
		var err error
		done, err = r.create(ctx, r.pool, inst)
		return err
	})
	if err != nil {
		return fmt.Errorf("create instance %q: %w", inst.Name, err)
	}
	done()
	return nil
}

// CreateInstances inserts every instance as CreateInstance does, in one
// transaction: all or none. On failure nothing is written and no instance
// is changed.
func (r *Registry) CreateInstances(ctx context.Context, insts []*dtma.Instance) error {
	var dones []func()
	err := r.do(ctx, "import instances", func(ctx context.Context) error {
		dones = dones[:0]
		return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			for _, inst := range insts {
				done, err := r.create(ctx, tx, inst)
				if err != nil {
					return fmt.Errorf("create instance %q: %w", inst.Name, err)
				}
				dones = append(dones, done)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, done := range dones {
		done()
	}
	return nil
}

// execer is what create needs of the pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// create inserts inst through ex and returns the function that sets inst's
// stored values, to be called once the insert is committed.
func (r *Registry) create(ctx context.Context, ex execer, inst *dtma.Instance) (func(), error) {
	if inst.HostID != "" && inst.HostID != r.hostID {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "host_id", "%q is not this agent's host (%q)", inst.HostID, r.hostID)
	}
	id := inst.ID
	if id == "" {
		id = dtma.NewUUID()
	} else if !dtma.IsUUID(id) {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "id", "must be a UUID")
	}
	id = strings.ToLower(id)
	if err := checkAccountID(inst.AccountToolInstanceID); err != nil {
		return nil, err
	}
	now := dbTime(time.Now())
	created, updated := dbTime(inst.CreatedAt), dbTime(inst.UpdatedAt)
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = now
	}
	v, err := encode(inst)
	if err != nil {
		return nil, err
	}
	_, err = ex.Exec(ctx, `INSERT INTO dtma_container_registry (
			id, host_id, name, account_tool_instance_id, container_name, docker_image_url,
			container_id, dtma_status, docker_status, port_bindings, ports, spec, spec_hash,
			desired_state, pending_op, tracking, last_error, started_at, finished_at,
			exit_code, restart_count, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`,
		id, r.hostID, inst.Name, nullString(inst.AccountToolInstanceID), inst.ContainerName, inst.Spec.Image,
		nullString(inst.ContainerID), string(inst.Status), nullString(string(inst.DockerStatus)),
		v.portBindings, v.ports, v.spec, inst.SpecHash,
		string(inst.DesiredState), string(inst.PendingOp), string(inst.Tracking), inst.LastError,
		nullTime(inst.StartedAt), nullTime(inst.FinishedAt), inst.ExitCode, inst.RestartCount,
		created, updated)
	if err := conflict(err, r.hostID, id, inst); err != nil {
		return nil, err
	}
	return func() { inst.ID, inst.HostID, inst.CreatedAt, inst.UpdatedAt = id, r.hostID, created, updated }, nil
}

// UpdateInstance replaces every stored field of the row with inst.ID on
// this host (except ID, HostID and CreatedAt) and sets inst.UpdatedAt to
// now. ENOTFOUND when no such row exists on this host; ECONFLICT on a
// uniqueness clash; EINVALID for a malformed account tool instance id;
// EUNAVAILABLE when the database cannot be reached.
func (r *Registry) UpdateInstance(ctx context.Context, inst *dtma.Instance) error {
	if !dtma.IsUUID(inst.ID) {
		return dtma.Errorf(dtma.ENOTFOUND, "instance %q not found", inst.ID)
	}
	if err := checkAccountID(inst.AccountToolInstanceID); err != nil {
		return err
	}
	v, err := encode(inst)
	if err != nil {
		return err
	}
	updated := dbTime(time.Now())
	err = r.do(ctx, "update instance", func(ctx context.Context) error {
		tag, err := r.pool.Exec(ctx, `UPDATE dtma_container_registry SET
			name = $3, account_tool_instance_id = $4, container_name = $5, docker_image_url = $6,
			container_id = $7, dtma_status = $8, docker_status = $9, port_bindings = $10, ports = $11,
			spec = $12, spec_hash = $13, desired_state = $14, pending_op = $15, tracking = $16,
			last_error = $17, started_at = $18, finished_at = $19, exit_code = $20,
			restart_count = $21, updated_at = $22
		WHERE id = $1 AND host_id = $2`,
			inst.ID, r.hostID, inst.Name, nullString(inst.AccountToolInstanceID), inst.ContainerName, inst.Spec.Image,
			nullString(inst.ContainerID), string(inst.Status), nullString(string(inst.DockerStatus)),
			v.portBindings, v.ports, v.spec, inst.SpecHash,
			string(inst.DesiredState), string(inst.PendingOp), string(inst.Tracking), inst.LastError,
			nullTime(inst.StartedAt), nullTime(inst.FinishedAt), inst.ExitCode, inst.RestartCount,
			updated)
		if err != nil {
			return conflict(err, r.hostID, inst.ID, inst)
		}
		if tag.RowsAffected() == 0 {
			return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", inst.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update instance %s: %w", inst.ID, err)
	}
	inst.UpdatedAt = updated
	return nil
}

// UpdateObserved writes o into the row with the given id on this host only
// when it differs from what is stored (times compared at microsecond
// precision), bumping updated_at, and reports whether it wrote. ENOTFOUND
// when no such row exists on this host; EUNAVAILABLE when the database
// cannot be reached.
func (r *Registry) UpdateObserved(ctx context.Context, id string, o dtma.Observed) (changed bool, err error) {
	if !dtma.IsUUID(id) {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %q not found", id)
	}
	var found bool
	err = r.do(ctx, "update observed", func(ctx context.Context) error {
		return r.pool.QueryRow(ctx, `WITH target AS (
			SELECT id FROM dtma_container_registry WHERE id = $1 AND host_id = $2
		), upd AS (
			UPDATE dtma_container_registry SET
				docker_status = $3::varchar, container_id = $4::varchar,
				started_at = $5::timestamptz, finished_at = $6::timestamptz,
				exit_code = $7::integer, restart_count = $8::integer, updated_at = $9
			WHERE id = $1 AND host_id = $2 AND (
				docker_status IS DISTINCT FROM $3::varchar OR container_id IS DISTINCT FROM $4::varchar OR
				started_at IS DISTINCT FROM $5::timestamptz OR finished_at IS DISTINCT FROM $6::timestamptz OR
				exit_code <> $7::integer OR restart_count <> $8::integer)
			RETURNING id
		)
		SELECT EXISTS (SELECT 1 FROM target), EXISTS (SELECT 1 FROM upd)`,
			id, r.hostID, nullString(string(o.DockerStatus)), nullString(o.ContainerID),
			nullTime(o.StartedAt), nullTime(o.FinishedAt), o.ExitCode, o.RestartCount,
			dbTime(time.Now())).Scan(&found, &changed)
	})
	if err != nil {
		return false, fmt.Errorf("update observed state of %s: %w", id, err)
	}
	if !found {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	return changed, nil
}

// UpdateHealth writes h.State, h.LastError and h.ChangedAt into the row
// with the given id on this host only when they differ from what is stored
// (the time at microsecond precision), bumping updated_at, and reports
// whether it wrote. ENOTFOUND when no such row exists on this host;
// EUNAVAILABLE when the database cannot be reached.
func (r *Registry) UpdateHealth(ctx context.Context, id string, h dtma.HealthStatus) (changed bool, err error) {
	if !dtma.IsUUID(id) {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %q not found", id)
	}
	var found bool
	err = r.do(ctx, "update health", func(ctx context.Context) error {
		return r.pool.QueryRow(ctx, `WITH target AS (
			SELECT id FROM dtma_container_registry WHERE id = $1 AND host_id = $2
		), upd AS (
			UPDATE dtma_container_registry SET
				health_state = $3::text, health_error = $4::text, health_changed_at = $5::timestamptz, updated_at = $6
			WHERE id = $1 AND host_id = $2 AND (
				health_state <> $3::text OR health_error <> $4::text OR health_changed_at IS DISTINCT FROM $5::timestamptz)
			RETURNING id
		)
		SELECT EXISTS (SELECT 1 FROM target), EXISTS (SELECT 1 FROM upd)`,
			id, r.hostID, string(h.State), h.LastError, nullTime(h.ChangedAt), dbTime(time.Now())).Scan(&found, &changed)
	})
	if err != nil {
		return false, fmt.Errorf("update health of %s: %w", id, err)
	}
	if !found {
		return false, dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
	}
	return changed, nil
}

// DeleteInstance removes the row with the given id on this host. Deleting
// a row that does not exist (or is not a UUID) is not an error.
// EUNAVAILABLE when the database cannot be reached.
func (r *Registry) DeleteInstance(ctx context.Context, id string) error {
	if !dtma.IsUUID(id) {
		if r.closed.Load() {
			return dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable: closed")
		}
		return nil
	}
	err := r.do(ctx, "delete instance", func(ctx context.Context) error {
		_, err := r.pool.Exec(ctx, "DELETE FROM dtma_container_registry WHERE id = $1 AND host_id = $2", id, r.hostID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete instance %s: %w", id, err)
	}
	return nil
}

// FindInstanceByID returns the row with the given id on this host.
// ENOTFOUND when there is none (an id that is not a UUID names none);
// EUNAVAILABLE when the database cannot be reached.
func (r *Registry) FindInstanceByID(ctx context.Context, id string) (*dtma.Instance, error) {
	rows, err := r.FindInstances(ctx, dtma.InstanceFilter{ID: &id})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, dtma.Errorf(dtma.ENOTFOUND, "instance %q not found", id)
	}
	return rows[0], nil
}

// FindInstances returns the rows matching filter, of this host unless
// filter.AllHosts, ordered by CreatedAt, then Name (then host and id). An
// ID that is not a UUID matches nothing. EINVALID when
// filter.AccountToolInstanceID is not a UUID; EUNAVAILABLE when the
// database cannot be reached.
func (r *Registry) FindInstances(ctx context.Context, filter dtma.InstanceFilter) ([]*dtma.Instance, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	// The literal condition lets the planner use the partial unique
	// indexes (WHERE host_id <> '') with generic plans too, and keeps rows
	// the platform wrote itself (host_id '') out of every listing.
	where = append(where, "host_id <> ''")
	if !filter.AllHosts {
		add("host_id = $%d", r.hostID)
	}
	if filter.ID != nil {
		if !dtma.IsUUID(*filter.ID) {
			if r.closed.Load() {
				return nil, dtma.Errorf(dtma.EUNAVAILABLE, "registry unavailable: closed")
			}
			return []*dtma.Instance{}, nil
		}
		add("id = $%d", *filter.ID)
	}
	if filter.Name != nil {
		add("name = $%d", *filter.Name)
	}
	if filter.AccountToolInstanceID != nil {
		if !dtma.IsUUID(*filter.AccountToolInstanceID) {
			return nil, dtma.FieldErrorf(dtma.EINVALID, "account_tool_instance_id", "must be a UUID")
		}
		add("account_tool_instance_id = $%d", *filter.AccountToolInstanceID)
	}
	if filter.ContainerName != nil {
		add("container_name = $%d", *filter.ContainerName)
	}
	paged := filter.AfterID != "" || filter.Limit > 0
	if filter.AfterID != "" {
		if !dtma.IsUUID(filter.AfterID) {
			return nil, dtma.FieldErrorf(dtma.EINVALID, "cursor", "not a cursor this list gave out")
		}
		add("id > $%d", strings.ToLower(filter.AfterID))
	}
	sql := "SELECT " + selectColumns + " FROM dtma_container_registry"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	if paged {
		sql += " ORDER BY id"
		if filter.Limit > 0 {
			sql += " LIMIT " + strconv.Itoa(filter.Limit)
		}
	} else {
		sql += " ORDER BY created_at, name, host_id, id"
	}

	var out []*dtma.Instance
	err := r.do(ctx, "find instances", func(ctx context.Context) error {
		rows, err := r.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, scanInstance)
		if err != nil {
			return err
		}
		out = list
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find instances: %w", err)
	}
	if out == nil {
		out = []*dtma.Instance{}
	}
	return out, nil
}

// scanInstance reads one row of selectColumns.
func scanInstance(row pgx.CollectableRow) (*dtma.Instance, error) {
	var (
		inst                          dtma.Instance
		spec, ports                   []byte
		desired, status, op, tracking string
		dockerStatus                  string
		started, finished             *time.Time
		health                        string
		healthChanged                 *time.Time
	)
	err := row.Scan(&inst.ID, &inst.HostID, &inst.Name, &inst.AccountToolInstanceID, &inst.ContainerName,
		&spec, &inst.SpecHash, &ports, &desired, &status, &op, &tracking, &inst.LastError,
		&dockerStatus, &inst.ContainerID, &started, &finished, &inst.ExitCode, &inst.RestartCount,
		&inst.CreatedAt, &inst.UpdatedAt, &health, &inst.Health.LastError, &healthChanged)
	if err != nil {
		return nil, err
	}
	inst.Health.State = dtma.HealthState(health)
	if healthChanged != nil {
		inst.Health.ChangedAt = healthChanged.UTC()
	}
	if err := json.Unmarshal(spec, &inst.Spec); err != nil {
		return nil, &dtma.Error{Code: dtma.EINTERNAL, Message: "corrupt spec in registry row " + inst.ID}
	}
	if err := json.Unmarshal(ports, &inst.Ports); err != nil {
		return nil, &dtma.Error{Code: dtma.EINTERNAL, Message: "corrupt ports in registry row " + inst.ID, Err: err}
	}
	if len(inst.Spec.Env) == 0 {
		inst.Spec.Env = nil
	}
	if len(inst.Spec.Ports) == 0 {
		inst.Spec.Ports = nil
	}
	if len(inst.Ports) == 0 {
		inst.Ports = nil
	}
	inst.DesiredState = dtma.DesiredState(desired)
	inst.Status = dtma.Status(status)
	inst.PendingOp = dtma.Op(op)
	inst.Tracking = dtma.Tracking(tracking)
	inst.DockerStatus = dtma.DockerState(dockerStatus)
	if started != nil {
		inst.StartedAt = started.UTC()
	}
	if finished != nil {
		inst.FinishedAt = finished.UTC()
	}
	inst.CreatedAt, inst.UpdatedAt = inst.CreatedAt.UTC(), inst.UpdatedAt.UTC()
	return &inst, nil
}

// encoded holds an instance's JSONB column values.
type encoded struct {
	spec, ports, portBindings []byte
}

func encode(inst *dtma.Instance) (encoded, error) {
	var v encoded
	var err error
	if v.spec, err = json.Marshal(inst.Spec); err != nil {
		// json.Marshal of a Spec cannot fail; never quote it (env).
		return v, &dtma.Error{Code: dtma.EINTERNAL, Message: "cannot encode spec"}
	}
	ports := inst.Ports
	if ports == nil {
		ports = []dtma.Port{}
	}
	if v.ports, err = json.Marshal(ports); err != nil {
		return v, &dtma.Error{Code: dtma.EINTERNAL, Message: "cannot encode ports", Err: err}
	}
	if v.portBindings, err = json.Marshal(dtma.DockerPortBindings(inst.Ports)); err != nil {
		return v, &dtma.Error{Code: dtma.EINTERNAL, Message: "cannot encode port bindings", Err: err}
	}
	return v, nil
}

// conflict maps a unique violation to an ECONFLICT error naming the field
// and the clashing value (never env); other errors pass through.
func conflict(err error, hostID, id string, inst *dtma.Instance) error {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	e := &dtma.Error{Code: dtma.ECONFLICT, Err: err}
	switch pgErr.ConstraintName {
	case constraintID:
		e.Field, e.Message = "id", fmt.Sprintf("instance id %s already exists", id)
	case constraintName:
		e.Field, e.Message = "name", fmt.Sprintf("name %s is already used on host %s", strconv.Quote(inst.Name), strconv.Quote(hostID))
	case constraintContainerName:
		e.Field, e.Message = "container_name", fmt.Sprintf("container name %s is already used on host %s", strconv.Quote(inst.ContainerName), strconv.Quote(hostID))
	case constraintAccount:
		e.Field, e.Message = "account_tool_instance_id", fmt.Sprintf("account tool instance id %s is already used on host %s", inst.AccountToolInstanceID, strconv.Quote(hostID))
	default:
		e.Message = "instance clashes with an existing one"
	}
	return e
}

func checkAccountID(id string) error {
	if id != "" && !dtma.IsUUID(id) {
		return dtma.FieldErrorf(dtma.EINVALID, "account_tool_instance_id", "must be a UUID")
	}
	return nil
}

// dbTime returns t as stored: UTC, microsecond precision.
func dbTime(t time.Time) time.Time { return dtma.RegistryTime(t) }

// nullTime maps the zero time to SQL NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return dbTime(t)
}

// nullString maps "" to SQL NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
