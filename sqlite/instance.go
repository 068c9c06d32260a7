package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentopia/dtma"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// table is the registry table, named as on the PostgreSQL side.
const table = "dtma_container_registry"

// columns are read by every query, in scanInstance's order.
const columns = `id, host_id, name, account_tool_instance_id, container_name, container_id,
	dtma_status, docker_status, ports, spec, spec_hash, desired_state, pending_op, tracking,
	last_error, started_at, finished_at, exit_code, restart_count, created_at, updated_at,
	health_state, health_error, health_changed_at`

// CreateInstance inserts inst. It assigns inst.ID (a UUID) when empty, sets
// inst.HostID to the registry's host when empty and CreatedAt/UpdatedAt to
// now when zero; on success inst holds those values as stored (UTC,
// microseconds). inst is left unchanged on failure. ECONFLICT when the id
// exists or the name, account tool instance id or container name is used on
// this host; EINVALID when inst.HostID names another host or a key field is
// empty; EUNAVAILABLE when the database cannot be reached.
func (r *Registry) CreateInstance(ctx context.Context, inst *dtma.Instance) error {
	if err := r.check(); err != nil {
		return err
	}
	return r.create(ctx, r.w, inst)
}

// CreateInstances inserts every instance as CreateInstance does, in one
// transaction: all or none. On failure nothing is written and no instance
// is changed.
func (r *Registry) CreateInstances(ctx context.Context, insts []*dtma.Instance) error {
	if err := r.check(); err != nil {
		return err
	}
	tx, err := r.w.BeginTx(ctx, nil)
	if err != nil {
		return r.dbError("begin import", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	copies := make([]*dtma.Instance, len(insts))
	for i, inst := range insts {
		if inst == nil {
			return dtma.Errorf(dtma.EINVALID, "no instance")
		}
		copies[i] = inst.Clone()
		if err := r.create(ctx, tx, copies[i]); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return r.dbError("commit import", err)
	}
	for i, c := range copies {
		*insts[i] = *c
	}
	return nil
}

// execer is what create needs of the write connection or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// create is CreateInstance on ex.
func (r *Registry) create(ctx context.Context, ex execer, inst *dtma.Instance) error {
	if inst == nil {
		return dtma.Errorf(dtma.EINVALID, "no instance")
	}
	host := inst.HostID
	if host == "" {
		host = r.hostID
	} else if host != r.hostID {
		return dtma.FieldErrorf(dtma.EINVALID, "host_id", "instance belongs to host %q, not %q", host, r.hostID)
	}
	id := inst.ID
	if id == "" {
		id = dtma.NewUUID()
	}
	now := nowMicro()
	created, updated := microUTC(inst.CreatedAt), microUTC(inst.UpdatedAt)
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = now
	}
	row, err := encode(inst)
	if err != nil {
		return err
	}
	_, err = ex.ExecContext(ctx, `INSERT INTO `+table+` (
		id, host_id, name, account_tool_instance_id, container_name, docker_image_url, container_id,
		dtma_status, docker_status, port_bindings, ports, spec, spec_hash, desired_state, pending_op,
		tracking, last_error, started_at, finished_at, exit_code, restart_count, created_at, updated_at
	) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, host, inst.Name, row.accountID, inst.ContainerName, inst.Spec.Image, inst.ContainerID,
		string(inst.Status), string(inst.DockerStatus), row.portBindings, row.ports, row.spec, inst.SpecHash,
		string(inst.DesiredState), string(inst.PendingOp), string(inst.Tracking), inst.LastError,
		nullTime(inst.StartedAt), nullTime(inst.FinishedAt), inst.ExitCode, inst.RestartCount,
		created.UnixMicro(), updated.UnixMicro())
	if err != nil {
		return r.writeError("create instance "+inst.Name, err, host, id, inst)
	}
	inst.ID, inst.HostID, inst.CreatedAt, inst.UpdatedAt = id, host, created, updated
	return nil
}

// UpdateInstance replaces every stored field of the row with inst.ID except
// ID, HostID and CreatedAt, and sets inst.UpdatedAt to now (UTC,
// microseconds). ENOTFOUND when no such row exists on this host; ECONFLICT
// when the new name, account tool instance id or container name is used by
// another row of this host; EUNAVAILABLE when the database cannot be reached.
func (r *Registry) UpdateInstance(ctx context.Context, inst *dtma.Instance) error {
	if err := r.check(); err != nil {
		return err
	}
	if inst == nil {
		return dtma.Errorf(dtma.EINVALID, "no instance")
	}
	row, err := encode(inst)
	if err != nil {
		return err
	}
	now := nowMicro()
	res, err := r.w.ExecContext(ctx, `UPDATE `+table+` SET
		name = ?, account_tool_instance_id = ?, container_name = ?, docker_image_url = ?, container_id = ?,
		dtma_status = ?, docker_status = ?, port_bindings = ?, ports = ?, spec = ?, spec_hash = ?,
		desired_state = ?, pending_op = ?, tracking = ?, last_error = ?, started_at = ?, finished_at = ?,
		exit_code = ?, restart_count = ?, updated_at = ?
		WHERE id = ? AND host_id = ?`,
		inst.Name, row.accountID, inst.ContainerName, inst.Spec.Image, inst.ContainerID,
		string(inst.Status), string(inst.DockerStatus), row.portBindings, row.ports, row.spec, inst.SpecHash,
		string(inst.DesiredState), string(inst.PendingOp), string(inst.Tracking), inst.LastError,
		nullTime(inst.StartedAt), nullTime(inst.FinishedAt), inst.ExitCode, inst.RestartCount,
		now.UnixMicro(), inst.ID, r.hostID)
	if err != nil {
		return r.writeError("update instance "+inst.ID, err, r.hostID, inst.ID, inst)
	}
	if n, err := res.RowsAffected(); err != nil {
		return r.dbError("update instance "+inst.ID, err)
	} else if n == 0 {
		return notFound(inst.ID)
	}
	inst.UpdatedAt = now
	return nil
}

// UpdateObserved writes o into the row with the given id only when it
// differs from what is stored (compared at the stored precision: times in
// microseconds), and reports whether it wrote; a write also sets
// updated_at. The common unchanged case only reads. ENOTFOUND when no such
// row exists on this host; EUNAVAILABLE when the database cannot be reached.
func (r *Registry) UpdateObserved(ctx context.Context, id string, o dtma.Observed) (changed bool, err error) {
	if err := r.check(); err != nil {
		return false, err
	}
	o.StartedAt, o.FinishedAt = microUTC(o.StartedAt), microUTC(o.FinishedAt)

	var cur dtma.Observed
	var docker string
	var started, finished sql.NullInt64
	err = r.r.QueryRowContext(ctx, `SELECT docker_status, container_id, started_at, finished_at, exit_code, restart_count
		FROM `+table+` WHERE id = ? AND host_id = ?`, id, r.hostID).
		Scan(&docker, &cur.ContainerID, &started, &finished, &cur.ExitCode, &cur.RestartCount)
	if errors.Is(err, sql.ErrNoRows) {
		return false, notFound(id)
	} else if err != nil {
		return false, r.dbError("read observed state of instance "+id, err)
	}
	cur.DockerStatus = dtma.DockerState(docker)
	cur.StartedAt, cur.FinishedAt = timeOf(started), timeOf(finished)
	if cur == o {
		return false, nil
	}

	// Write only if the row still differs: a concurrent writer may have
	// stored the same observation meanwhile.
	st, fin := nullTime(o.StartedAt), nullTime(o.FinishedAt)
	res, err := r.w.ExecContext(ctx, `UPDATE `+table+` SET
		docker_status = ?, container_id = ?, started_at = ?, finished_at = ?, exit_code = ?, restart_count = ?,
		updated_at = ?
		WHERE id = ? AND host_id = ? AND (docker_status IS NOT ? OR container_id IS NOT ? OR
			started_at IS NOT ? OR finished_at IS NOT ? OR exit_code IS NOT ? OR restart_count IS NOT ?)`,
		string(o.DockerStatus), o.ContainerID, st, fin, o.ExitCode, o.RestartCount,
		nowMicro().UnixMicro(), id, r.hostID,
		string(o.DockerStatus), o.ContainerID, st, fin, o.ExitCode, o.RestartCount)
	if err != nil {
		return false, r.dbError("update observed state of instance "+id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, r.dbError("update observed state of instance "+id, err)
	}
	if n == 1 {
		return true, nil
	}
	var one int
	err = r.w.QueryRowContext(ctx, `SELECT 1 FROM `+table+` WHERE id = ? AND host_id = ?`, id, r.hostID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, notFound(id) // deleted meanwhile
	} else if err != nil {
		return false, r.dbError("read instance "+id, err)
	}
	return false, nil
}

// UpdateHealth writes h.State, h.LastError and h.ChangedAt into the row
// with the given id only when they differ from what is stored (the time at
// microsecond precision), and reports whether it wrote; a write also sets
// updated_at. ENOTFOUND when no such row exists on this host; EUNAVAILABLE
// when the database cannot be reached.
func (r *Registry) UpdateHealth(ctx context.Context, id string, h dtma.HealthStatus) (changed bool, err error) {
	if err := r.check(); err != nil {
		return false, err
	}
	at := nullTime(microUTC(h.ChangedAt))
	res, err := r.w.ExecContext(ctx, `UPDATE `+table+` SET health_state = ?, health_error = ?, health_changed_at = ?, updated_at = ?
		WHERE id = ? AND host_id = ? AND (health_state IS NOT ? OR health_error IS NOT ? OR health_changed_at IS NOT ?)`,
		string(h.State), h.LastError, at, nowMicro().UnixMicro(), id, r.hostID, string(h.State), h.LastError, at)
	if err != nil {
		return false, r.dbError("update health of instance "+id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, r.dbError("update health of instance "+id, err)
	}
	if n == 1 {
		return true, nil
	}
	var one int
	err = r.w.QueryRowContext(ctx, `SELECT 1 FROM `+table+` WHERE id = ? AND host_id = ?`, id, r.hostID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, notFound(id)
	} else if err != nil {
		return false, r.dbError("read instance "+id, err)
	}
	return false, nil
}

// DeleteInstance removes the row with the given id on this host. Deleting a
// row that does not exist is not an error. EUNAVAILABLE when the database
// cannot be reached.
func (r *Registry) DeleteInstance(ctx context.Context, id string) error {
	if err := r.check(); err != nil {
		return err
	}
	if _, err := r.w.ExecContext(ctx, `DELETE FROM `+table+` WHERE id = ? AND host_id = ?`, id, r.hostID); err != nil {
		return r.dbError("delete instance "+id, err)
	}
	return nil
}

// FindInstanceByID returns the row with the given id on this host. ENOTFOUND
// when there is none; EUNAVAILABLE when the database cannot be reached.
func (r *Registry) FindInstanceByID(ctx context.Context, id string) (*dtma.Instance, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	row := r.r.QueryRowContext(ctx, `SELECT `+columns+` FROM `+table+` WHERE id = ? AND host_id = ?`, id, r.hostID)
	inst, err := scanInstance(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	} else if err != nil {
		return nil, r.dbError("find instance "+id, err)
	}
	return inst, nil
}

// FindInstances returns the rows matching filter (this host's only, unless
// filter.AllHosts) ordered by CreatedAt, then Name (bytewise). An account
// tool instance id filter never matches a row without one. EUNAVAILABLE when
// the database cannot be reached.
func (r *Registry) FindInstances(ctx context.Context, filter dtma.InstanceFilter) ([]*dtma.Instance, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	var where []string
	var args []any
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if !filter.AllHosts {
		add("host_id = ?", r.hostID)
	}
	if filter.ID != nil {
		add("id = ?", *filter.ID)
	}
	if filter.Name != nil {
		add("name = ?", *filter.Name)
	}
	if filter.AccountToolInstanceID != nil {
		add("account_tool_instance_id = ?", *filter.AccountToolInstanceID)
	}
	if filter.ContainerName != nil {
		add("container_name = ?", *filter.ContainerName)
	}
	paged := filter.AfterID != "" || filter.Limit > 0
	if filter.AfterID != "" {
		add("id > ?", strings.ToLower(filter.AfterID))
	}
	q := `SELECT ` + columns + ` FROM ` + table
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	if paged {
		q += ` ORDER BY id`
		if filter.Limit > 0 {
			q += ` LIMIT ` + strconv.Itoa(filter.Limit)
		}
	} else {
		q += ` ORDER BY created_at, name`
	}

	rows, err := r.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, r.dbError("find instances", err)
	}
	defer rows.Close()
	var out []*dtma.Instance
	for rows.Next() {
		inst, err := scanInstance(rows)
		if err != nil {
			return nil, r.dbError("find instances", err)
		}
		out = append(out, inst)
	}
	if err := rows.Err(); err != nil {
		return nil, r.dbError("find instances", err)
	}
	return out, nil
}

// encoded holds an instance's JSON and nullable columns.
type encoded struct {
	accountID    any // nil when unset
	spec         string
	ports        string
	portBindings string
}

// encode prepares inst's derived columns. EINVALID for an empty name or
// container name, or an env value that is not valid UTF-8 (JSON could not
// keep it exactly).
func encode(inst *dtma.Instance) (encoded, error) {
	var e encoded
	if inst.Name == "" {
		return e, dtma.FieldErrorf(dtma.EINVALID, "name", "must not be empty")
	}
	if inst.ContainerName == "" {
		return e, dtma.FieldErrorf(dtma.EINVALID, "container_name", "must not be empty")
	}
	for k, v := range inst.Spec.Env {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return e, dtma.FieldErrorf(dtma.EINVALID, "env", "names and values must be valid UTF-8")
		}
	}
	if inst.AccountToolInstanceID != "" {
		e.accountID = inst.AccountToolInstanceID
	}
	spec, err := json.Marshal(inst.Spec)
	if err != nil {
		return e, fmt.Errorf("encode spec: %w", err)
	}
	ports := inst.Ports
	if ports == nil {
		ports = []dtma.Port{}
	}
	pj, err := json.Marshal(ports)
	if err != nil {
		return e, fmt.Errorf("encode ports: %w", err)
	}
	pb, err := json.Marshal(dtma.DockerPortBindings(inst.Ports))
	if err != nil {
		return e, fmt.Errorf("encode port bindings: %w", err)
	}
	e.spec, e.ports, e.portBindings = string(spec), string(pj), string(pb)
	return e, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanInstance(s scanner) (*dtma.Instance, error) {
	var (
		inst                                       dtma.Instance
		account                                    sql.NullString
		status, docker, desired, pending, tracking string
		ports, spec                                string
		started, finished, healthChanged           sql.NullInt64
		created, updated                           int64
		health                                     string
	)
	if err := s.Scan(&inst.ID, &inst.HostID, &inst.Name, &account, &inst.ContainerName, &inst.ContainerID,
		&status, &docker, &ports, &spec, &inst.SpecHash, &desired, &pending, &tracking,
		&inst.LastError, &started, &finished, &inst.ExitCode, &inst.RestartCount, &created, &updated,
		&health, &inst.Health.LastError, &healthChanged); err != nil {
		return nil, err
	}
	inst.Health.State, inst.Health.ChangedAt = dtma.HealthState(health), timeOf(healthChanged)
	inst.AccountToolInstanceID = account.String
	inst.Status, inst.DockerStatus = dtma.Status(status), dtma.DockerState(docker)
	inst.DesiredState, inst.PendingOp, inst.Tracking = dtma.DesiredState(desired), dtma.Op(pending), dtma.Tracking(tracking)
	inst.StartedAt, inst.FinishedAt = timeOf(started), timeOf(finished)
	inst.CreatedAt, inst.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	if err := json.Unmarshal([]byte(spec), &inst.Spec); err != nil {
		return nil, fmt.Errorf("decode spec of instance %s: %w", inst.ID, err)
	}
	if len(inst.Spec.Env) == 0 {
		inst.Spec.Env = nil
	}
	if err := json.Unmarshal([]byte(ports), &inst.Ports); err != nil {
		return nil, fmt.Errorf("decode ports of instance %s: %w", inst.ID, err)
	}
	if len(inst.Ports) == 0 {
		inst.Ports = nil
	}
	return &inst, nil
}

// nowMicro returns the current time as stored: UTC, microseconds.
func nowMicro() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// microUTC returns t as stored; the zero time stays zero.
func microUTC(t time.Time) time.Time { return dtma.RegistryTime(t) }

// nullTime returns t's column value: unix microseconds, NULL when zero.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func timeOf(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func notFound(id string) error {
	return dtma.Errorf(dtma.ENOTFOUND, "instance %s not found", id)
}

// writeError maps a failed INSERT or UPDATE: a uniqueness violation becomes
// ECONFLICT naming the field and its value (never an env value).
func (r *Registry) writeError(op string, err error, host, id string, inst *dtma.Instance) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return r.dbError(op, err)
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
	default:
		return r.dbError(op, err)
	}
	var ce *dtma.Error
	switch uniqueColumn(se.Error()) {
	case "id":
		ce = dtma.FieldErrorf(dtma.ECONFLICT, "id", "%q already exists", id)
	case "name":
		ce = dtma.FieldErrorf(dtma.ECONFLICT, "name", "%q is already used on host %s", inst.Name, host)
	case "account_tool_instance_id":
		ce = dtma.FieldErrorf(dtma.ECONFLICT, "account_tool_instance_id", "%q is already used on host %s",
			inst.AccountToolInstanceID, host)
	case "container_name":
		ce = dtma.FieldErrorf(dtma.ECONFLICT, "container_name", "%q is already used on host %s", inst.ContainerName, host)
	default:
		ce = dtma.Errorf(dtma.ECONFLICT, "instance clashes with an existing row on host %s", host)
	}
	ce.Err = err
	return ce
}

// uniqueColumn returns the column, other than host_id, that SQLite's
// "UNIQUE constraint failed: t.host_id, t.name" message names.
func uniqueColumn(msg string) string {
	const marker = "constraint failed: "
	i := strings.LastIndex(msg, marker)
	if i < 0 {
		return ""
	}
	list := msg[i+len(marker):]
	if j := strings.IndexAny(list, " ("); j >= 0 && !strings.Contains(list[:j], ",") {
		list = list[:j]
	}
	for _, col := range strings.Split(list, ",") {
		col = strings.TrimSpace(col)
		if j := strings.IndexByte(col, ' '); j >= 0 {
			col = col[:j]
		}
		col = strings.TrimPrefix(col, table+".")
		if col != "host_id" && col != "" {
			return col
		}
	}
	return ""
}

// dbError maps a database failure: EUNAVAILABLE when the registry is closed,
// busy beyond BusyTimeout, out of disk, unreadable or corrupt, or the
// context's deadline passed; otherwise the error wrapped with op.
func (r *Registry) dbError(op string, err error) error {
	if r.closed.Load() {
		return &dtma.Error{Code: dtma.EUNAVAILABLE, Message: "registry database is closed", Err: err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return unavailable(op, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOLFS,
			sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return unavailable(op, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
