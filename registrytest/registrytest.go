// Package registrytest is a conformance suite for dtma.Registry
// implementations. An implementation's tests call Run (and Bench from a
// benchmark) with a function that opens a registry for a host id. Memory
// (NewMemory) is an in-memory registry that passes the suite, for unit
// tests of code that uses a registry.
//
// # The open contract
//
// Run calls open(t, hostID) from inside its subtests, possibly several times
// per subtest and with different host ids. open must return a new, ready
// Registry handle for hostID, and:
//
//   - every handle opened with the same t (the same subtest) must share one
//     underlying store (database), so that the suite can put two hosts' rows
//     in one store by opening "host-a" and "host-b" in the same subtest;
//   - handles opened with different t must use isolated stores, empty when
//     first opened;
//   - open must register t.Cleanup to close the handle and dispose of the
//     store; the suite may itself call Close on a handle first, so that
//     cleanup must tolerate a handle that is already closed;
//   - open is called from parallel subtests and must be safe for concurrent
//     use; it calls t.Fatal when it cannot open a registry.
//
// Bench's open has the same contract with *testing.B in place of *testing.T.
//
// # Promises checked beyond dtma.Registry's doc comments
//
// Registries keep times at microsecond precision in UTC: a time written is
// read back as t.UTC().Truncate(time.Microsecond), and the zero time reads
// back as the zero time. Times a registry assigns (CreatedAt, UpdatedAt) are
// set on the caller's *Instance at that stored precision, so the caller's
// copy equals a later read. UpdateObserved compares at the stored precision,
// so observations that differ only below a microsecond are unchanged, and it
// bumps UpdatedAt only when it writes. ObservedAt is never stored (it reads
// back as zero). Nil and empty Spec.Env, Spec.Ports and Ports are
// equivalent; the order of Ports and Spec.Ports is kept. Instances returned
// by a registry are independent copies. Error messages never contain env
// values. After Close, methods fail with EUNAVAILABLE.
package registrytest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// Host ids used by the suite.
const (
	HostA = "host-a"
	HostB = "host-b"
)

// secret is the env value planted in every test instance; no error message
// may contain it.
const secret = "s3cr3t-Value=with=equals"

// Run runs the conformance suite against the registries open returns. See
// the package comment for open's contract.
func Run(t *testing.T, open func(t *testing.T, hostID string) dtma.Registry) {
	s := &suite{open: open}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"HostIDAndPing", s.testHostIDAndPing},
		{"CreateAssignsIDAndTimes", s.testCreateAssignsIDAndTimes},
		{"CreateKeepsGivenIDAndTimes", s.testCreateKeepsGivenIDAndTimes},
		{"CreateConflictName", s.testCreateConflict(func(dup, _ *dtma.Instance) { dup.Name = "first" })},
		{"CreateConflictAccountToolInstanceID", s.testCreateConflict(func(dup, orig *dtma.Instance) {
			dup.AccountToolInstanceID = orig.AccountToolInstanceID
		})},
		{"CreateConflictContainerName", s.testCreateConflict(func(dup, orig *dtma.Instance) {
			dup.ContainerName = orig.ContainerName
		})},
		{"CreateConflictID", s.testCreateConflict(func(dup, orig *dtma.Instance) { dup.ID = orig.ID })},
		{"CreateEmptyAccountIDsDoNotConflict", s.testCreateEmptyAccountIDs},
		{"CreateSameKeysOnAnotherHost", s.testCreateSameKeysOnAnotherHost},
		{"CreateForeignHostInvalid", s.testCreateForeignHost},
		{"CreateInstancesAllOrNothing", s.testCreateInstances},
		{"RoundTripEveryField", s.testRoundTrip},
		{"RoundTripEmptyValues", s.testRoundTripEmpty},
		{"UpdateInstance", s.testUpdateInstance},
		{"UpdateInstanceNotFound", s.testUpdateInstanceNotFound},
		{"UpdateInstanceConflict", s.testUpdateInstanceConflict},
		{"UpdateObserved", s.testUpdateObserved},
		{"UpdateObservedNotFound", s.testUpdateObservedNotFound},
		{"UpdateHealth", s.testUpdateHealth},
		{"DeleteInstance", s.testDeleteInstance},
		{"FindInstanceByIDNotFound", s.testFindByIDNotFound},
		{"FindInstancesFilters", s.testFindInstancesFilters},
		{"FindInstancesOrder", s.testFindInstancesOrder},
		{"FindInstancesPages", s.testFindInstancesPages},
		{"ConcurrentCreateDistinct", s.testConcurrentCreateDistinct},
		{"ConcurrentCreateSameName", s.testConcurrentCreateSameName},
		{"ReturnsCopies", s.testReturnsCopies},
		{"ClosedUnavailable", s.testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t)
		})
	}
}

type suite struct {
	open func(t *testing.T, hostID string) dtma.Registry
}

// NewInstance returns a valid, fully populated instance named name with no
// ID, HostID or times set. Its env holds a secret value that must never
// appear in an error message.
func NewInstance(name string) *dtma.Instance {
	spec := dtma.Spec{
		Image: "registry.example.com/tools/" + strings.ToLower(dtma.ContainerName(name)) + ":1.2",
		Env: map[string]string{
			"API_KEY":  secret,
			"GREETING": "grüße, 世界 🚀",
			"EMPTY":    "",
			"DSN":      "postgres://u:p@h/db?sslmode=disable&x=1",
			"QUOTED":   "a \"quoted\" 'value'\\with\nnewline\ttab",
		},
		Ports: []dtma.Port{
			{ContainerPort: 8080, Protocol: "tcp"},
			{ContainerPort: 53, Protocol: "udp", HostPort: 30053, HostIP: "127.0.0.1"},
		},
	}
	return &dtma.Instance{
		Name:                  name,
		AccountToolInstanceID: dtma.NewUUID(),
		ContainerName:         dtma.ContainerName(name),
		Spec:                  spec,
		SpecHash:              spec.Hash(),
		Ports: []dtma.Port{
			{ContainerPort: 8080, Protocol: "tcp", HostPort: 30080, HostIP: "127.0.0.1"},
			{ContainerPort: 53, Protocol: "udp", HostPort: 30053, HostIP: "127.0.0.1"},
		},
		DesiredState: dtma.DesiredRunning,
		Status:       dtma.StatusDeploying,
		PendingOp:    dtma.OpDeploy,
		Tracking:     dtma.TrackLabel,
	}
}

func (s *suite) testHostIDAndPing(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	if got := r.HostID(); got != HostA {
		t.Errorf("HostID() = %q, want %q", got, HostA)
	}
	if err := r.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	rows, err := r.FindInstances(ctx, dtma.InstanceFilter{AllHosts: true})
	if err != nil {
		t.Fatalf("FindInstances: %v", err)
	}
	if len(rows) != 0 {
		t.Errorf("a fresh store holds %d rows, want 0", len(rows))
	}
}

// testCreateInstances: a batch goes in whole, every row as CreateInstance
// would store it; a batch with one clash — with a stored row, or between
// two rows of the batch — writes nothing and changes none of its instances.
func (s *suite) testCreateInstances(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	batch := []*dtma.Instance{NewInstance("batch-1"), NewInstance("batch-2"), NewInstance("batch-3")}
	if err := r.CreateInstances(ctx, batch); err != nil {
		t.Fatalf("CreateInstances: %v", err)
	}
	for _, inst := range batch {
		if !dtma.IsUUID(inst.ID) || inst.HostID != HostA || inst.CreatedAt.IsZero() {
			t.Errorf("%s: stored values not set: id %q host %q created %v", inst.Name, inst.ID, inst.HostID, inst.CreatedAt)
		}
		assertEqual(t, mustFind(t, r, inst.ID), inst)
	}
	count := func() int {
		list, err := r.FindInstances(ctx, dtma.InstanceFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	before := count()
	clashStored := []*dtma.Instance{NewInstance("batch-4"), NewInstance("batch-1")}
	clashInside := []*dtma.Instance{NewInstance("batch-5"), NewInstance("batch-6"), NewInstance("batch-5")}
	for name, b := range map[string][]*dtma.Instance{"with a stored row": clashStored, "within the batch": clashInside} {
		err := r.CreateInstances(ctx, b)
		if dtma.ErrorCode(err) != dtma.ECONFLICT {
			t.Errorf("clash %s: %v, want conflict", name, err)
		}
		assertNoSecret(t, err)
		if n := count(); n != before {
			t.Errorf("clash %s: %d rows after the failed batch, want %d (nothing written)", name, n, before)
		}
		for _, inst := range b {
			if inst.ID != "" || !inst.CreatedAt.IsZero() {
				t.Errorf("clash %s: %s was changed by the failed batch (id %q)", name, inst.Name, inst.ID)
			}
		}
	}
}

func (s *suite) testCreateAssignsIDAndTimes(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("assigns")
	before := time.Now().UTC().Truncate(time.Microsecond)
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	after := time.Now().UTC().Add(time.Microsecond)
	if !dtma.IsUUID(inst.ID) {
		t.Errorf("ID = %q, want a UUID", inst.ID)
	}
	if inst.HostID != HostA {
		t.Errorf("HostID = %q, want %q", inst.HostID, HostA)
	}
	for name, tm := range map[string]time.Time{"CreatedAt": inst.CreatedAt, "UpdatedAt": inst.UpdatedAt} {
		if tm.Before(before) || tm.After(after) {
			t.Errorf("%s = %v, want between %v and %v", name, tm, before, after)
		}
		if tm != tm.UTC().Truncate(time.Microsecond) {
			t.Errorf("%s = %v, want UTC at microsecond precision", name, tm)
		}
	}
	got := mustFind(t, r, inst.ID)
	assertEqual(t, got, inst)

	// A second instance gets another id.
	other := NewInstance("assigns-2")
	if err := r.CreateInstance(ctx, other); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if other.ID == inst.ID {
		t.Errorf("two instances got the same id %q", inst.ID)
	}
}

func (s *suite) testCreateKeepsGivenIDAndTimes(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("keeps")
	id := dtma.NewUUID()
	created := time.Date(2021, 3, 4, 5, 6, 7, 891234000, time.UTC)
	updated := time.Date(2022, 3, 4, 5, 6, 7, 891234000, time.UTC)
	inst.ID, inst.HostID, inst.CreatedAt, inst.UpdatedAt = id, HostA, created, updated
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if inst.ID != id || inst.HostID != HostA || !inst.CreatedAt.Equal(created) || !inst.UpdatedAt.Equal(updated) {
		t.Errorf("CreateInstance changed given fields: id %q host %q created %v updated %v",
			inst.ID, inst.HostID, inst.CreatedAt, inst.UpdatedAt)
	}
	got := mustFind(t, r, id)
	assertEqual(t, got, inst)
}

// testCreateConflict creates an instance, then a second one that mutate
// makes clash with the first, and expects ECONFLICT with the store
// unchanged.
func (s *suite) testCreateConflict(mutate func(dup, orig *dtma.Instance)) func(t *testing.T) {
	return func(t *testing.T) {
		ctx := context.Background()
		r := s.open(t, HostA)
		orig := NewInstance("first")
		if err := r.CreateInstance(ctx, orig); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
		dup := NewInstance("second")
		mutate(dup, orig)
		err := r.CreateInstance(ctx, dup)
		assertCode(t, err, dtma.ECONFLICT)
		assertNoSecret(t, err)
		rows := mustFindAll(t, r, dtma.InstanceFilter{AllHosts: true})
		if len(rows) != 1 || rows[0].ID != orig.ID {
			t.Fatalf("after a conflicting create the store holds %s, want only %q", ids(rows), orig.ID)
		}
		assertEqual(t, rows[0], orig)
	}
}

func (s *suite) testCreateEmptyAccountIDs(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	for _, name := range []string{"no-account-1", "no-account-2"} {
		inst := NewInstance(name)
		inst.AccountToolInstanceID = ""
		if err := r.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance(%s) without account id: %v", name, err)
		}
		got := mustFind(t, r, inst.ID)
		if got.AccountToolInstanceID != "" {
			t.Errorf("AccountToolInstanceID = %q, want empty", got.AccountToolInstanceID)
		}
	}
	if rows := mustFindAll(t, r, dtma.InstanceFilter{}); len(rows) != 2 {
		t.Errorf("the store holds %d rows, want 2", len(rows))
	}
}

func (s *suite) testCreateSameKeysOnAnotherHost(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	a := NewInstance("shared")
	if err := ra.CreateInstance(ctx, a); err != nil {
		t.Fatalf("CreateInstance on %s: %v", HostA, err)
	}
	b := NewInstance("shared")
	b.AccountToolInstanceID = a.AccountToolInstanceID
	if err := rb.CreateInstance(ctx, b); err != nil {
		t.Fatalf("CreateInstance of the same name, account id and container name on %s: %v", HostB, err)
	}
	if b.HostID != HostB {
		t.Errorf("HostID = %q, want %q", b.HostID, HostB)
	}
	assertEqual(t, mustFind(t, ra, a.ID), a)
	assertEqual(t, mustFind(t, rb, b.ID), b)

	// The same id on another host is still a conflict: ids are global.
	c := NewInstance("other")
	c.ID = a.ID
	assertCode(t, rb.CreateInstance(ctx, c), dtma.ECONFLICT)
}

func (s *suite) testCreateForeignHost(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("foreign")
	inst.HostID = HostB
	err := r.CreateInstance(ctx, inst)
	assertCode(t, err, dtma.EINVALID)
	assertNoSecret(t, err)
	if rows := mustFindAll(t, r, dtma.InstanceFilter{AllHosts: true}); len(rows) != 0 {
		t.Errorf("a rejected create left %d rows", len(rows))
	}
}

// fullInstance returns an instance with every field set to a non-zero value,
// times in a non-UTC zone with nanoseconds.
func fullInstance(name string) *dtma.Instance {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	inst := NewInstance(name)
	inst.ID = dtma.NewUUID()
	inst.HostID = HostA
	inst.DesiredState = dtma.DesiredStopped
	inst.Status = dtma.StatusCrashLoop
	inst.PendingOp = dtma.OpRestart
	inst.Tracking = dtma.TrackContainerID
	inst.LastError = "start: port 30080 is already allocated — «retry later»"
	inst.Observed = dtma.Observed{
		DockerStatus: dtma.DockerRestarting,
		ContainerID:  "4f1d0c6f8a3b2e1d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d",
		StartedAt:    time.Date(2024, 1, 2, 3, 4, 5, 123456789, zone),
		FinishedAt:   time.Date(2024, 1, 2, 3, 5, 6, 987654321, zone),
		ExitCode:     137,
		RestartCount: 42,
	}
	inst.CreatedAt = time.Date(2023, 12, 31, 23, 59, 59, 999999999, zone)
	inst.UpdatedAt = time.Date(2024, 2, 29, 12, 0, 0, 1000, zone)
	return inst
}

func (s *suite) testRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := fullInstance("Round Trip ünïcode")
	inst.Spec.Env["MULTI_EQ"] = "a=b=c=="
	inst.Spec.Env["JSON"] = `{"k":["v",1,null]}`
	inst.Spec.Env["LONG"] = strings.Repeat("x=ü", 4000)
	inst.SpecHash = inst.Spec.Hash()
	want := inst.Clone()
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	assertEqual(t, mustFind(t, r, inst.ID), want)
	rows := mustFindAll(t, r, dtma.InstanceFilter{})
	if len(rows) != 1 {
		t.Fatalf("FindInstances returned %d rows, want 1", len(rows))
	}
	assertEqual(t, rows[0], want)
	if rows[0].Spec.Hash() != want.SpecHash {
		t.Errorf("the stored spec hashes to %s, want %s", rows[0].Spec.Hash(), want.SpecHash)
	}
}

func (s *suite) testRoundTripEmpty(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := &dtma.Instance{
		Name:          "bare",
		ContainerName: "dtma-bare",
		Spec:          dtma.Spec{Image: "alpine"},
		DesiredState:  dtma.DesiredStopped,
		Status:        dtma.StatusStopped,
		Tracking:      dtma.TrackLabel,
	}
	inst.SpecHash = inst.Spec.Hash()
	inst.ObservedAt = time.Now() // never stored
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	want := inst.Clone()
	want.ObservedAt = time.Time{}
	got := mustFind(t, r, inst.ID)
	assertEqual(t, got, want)
	if !got.StartedAt.IsZero() || !got.FinishedAt.IsZero() || !got.ObservedAt.IsZero() {
		t.Errorf("zero times read back as started %v finished %v observed %v", got.StartedAt, got.FinishedAt, got.ObservedAt)
	}
}

func (s *suite) testUpdateInstance(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("update-me")
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	inst.CreatedAt, inst.UpdatedAt = past, past
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	other := NewInstance("bystander")
	if err := r.CreateInstance(ctx, other); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}

	upd := fullInstance("updated name")
	upd.ID, upd.HostID = inst.ID, HostA
	upd.CreatedAt = time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC) // ignored
	upd.Spec.Env = map[string]string{"ONLY": "one=1"}
	upd.SpecHash = upd.Spec.Hash()
	before := time.Now().UTC().Truncate(time.Microsecond)
	if err := r.UpdateInstance(ctx, upd); err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	after := time.Now().UTC().Add(time.Microsecond)
	if upd.UpdatedAt.Before(before) || upd.UpdatedAt.After(after) {
		t.Errorf("UpdatedAt = %v, want between %v and %v", upd.UpdatedAt, before, after)
	}
	if upd.UpdatedAt != upd.UpdatedAt.UTC().Truncate(time.Microsecond) {
		t.Errorf("UpdatedAt = %v, want UTC at microsecond precision", upd.UpdatedAt)
	}
	want := upd.Clone()
	want.CreatedAt = past
	got := mustFind(t, r, inst.ID)
	assertEqual(t, got, want)
	assertEqual(t, mustFind(t, r, other.ID), other)

	// Replacing with emptier values clears them.
	bare := got.Clone()
	bare.AccountToolInstanceID = ""
	bare.Spec.Env = nil
	bare.Spec.Ports = nil
	bare.Ports = nil
	bare.LastError = ""
	bare.PendingOp = dtma.OpNone
	bare.Observed = dtma.Observed{}
	if err := r.UpdateInstance(ctx, bare); err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	assertEqual(t, mustFind(t, r, inst.ID), bare)
}

func (s *suite) testUpdateInstanceNotFound(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	unknown := NewInstance("unknown")
	unknown.ID = dtma.NewUUID()
	err := ra.UpdateInstance(ctx, unknown)
	assertCode(t, err, dtma.ENOTFOUND)
	assertNoSecret(t, err)

	a := NewInstance("owned-by-a")
	if err := ra.CreateInstance(ctx, a); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	foreign := a.Clone()
	foreign.HostID = ""
	foreign.Status = dtma.StatusError
	assertCode(t, rb.UpdateInstance(ctx, foreign), dtma.ENOTFOUND)
	foreign.HostID = HostB
	assertCode(t, rb.UpdateInstance(ctx, foreign), dtma.ENOTFOUND)
	assertEqual(t, mustFind(t, ra, a.ID), a)
}

func (s *suite) testUpdateInstanceConflict(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	a, b := NewInstance("alpha"), NewInstance("beta")
	for _, inst := range []*dtma.Instance{a, b} {
		if err := r.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
	}
	for field, mutate := range map[string]func(*dtma.Instance){
		"name":                     func(i *dtma.Instance) { i.Name = a.Name },
		"account_tool_instance_id": func(i *dtma.Instance) { i.AccountToolInstanceID = a.AccountToolInstanceID },
		"container_name":           func(i *dtma.Instance) { i.ContainerName = a.ContainerName },
	} {
		upd := b.Clone()
		mutate(upd)
		err := r.UpdateInstance(ctx, upd)
		if dtma.ErrorCode(err) != dtma.ECONFLICT {
			t.Errorf("UpdateInstance with a taken %s: got %v, want code %s", field, err, dtma.ECONFLICT)
		}
		assertNoSecret(t, err)
	}
	assertEqual(t, mustFind(t, r, a.ID), a)
	assertEqual(t, mustFind(t, r, b.ID), b)
}

func (s *suite) testUpdateObserved(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("observed")
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	inst.CreatedAt, inst.UpdatedAt = past, past
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}

	// The zero observation on a fresh row is no change.
	changed, err := r.UpdateObserved(ctx, inst.ID, dtma.Observed{})
	if err != nil || changed {
		t.Fatalf("UpdateObserved(zero) on a fresh row = %v, %v; want false, nil", changed, err)
	}
	if got := mustFind(t, r, inst.ID); !got.UpdatedAt.Equal(past) {
		t.Errorf("an unchanged UpdateObserved moved UpdatedAt to %v", got.UpdatedAt)
	}

	o := dtma.Observed{
		DockerStatus: dtma.DockerRunning,
		ContainerID:  "abc123",
		StartedAt:    time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", -7*3600)),
		ExitCode:     0,
		RestartCount: 1,
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	changed, err = r.UpdateObserved(ctx, inst.ID, o)
	if err != nil || !changed {
		t.Fatalf("UpdateObserved(new) = %v, %v; want true, nil", changed, err)
	}
	want := inst.Clone()
	want.Observed = o
	got := mustFind(t, r, inst.ID)
	if got.UpdatedAt.Before(before) {
		t.Errorf("UpdateObserved that wrote left UpdatedAt at %v, want >= %v", got.UpdatedAt, before)
	}
	want.UpdatedAt = got.UpdatedAt
	assertEqual(t, got, want)

	// The same observation, even with different sub-microsecond digits or
	// time zone, is unchanged and does not touch UpdatedAt.
	same := o
	same.StartedAt = o.StartedAt.UTC().Add(-789) // drops below µs
	for i, obs := range []dtma.Observed{o, same} {
		changed, err = r.UpdateObserved(ctx, inst.ID, obs)
		if err != nil || changed {
			t.Errorf("repeat %d: UpdateObserved(same) = %v, %v; want false, nil", i, changed, err)
		}
	}
	assertEqual(t, mustFind(t, r, inst.ID), want)

	// Each field on its own is a change.
	for name, mutate := range map[string]func(*dtma.Observed){
		"DockerStatus": func(o *dtma.Observed) { o.DockerStatus = dtma.DockerExited },
		"ContainerID":  func(o *dtma.Observed) { o.ContainerID = "def456" },
		"StartedAt":    func(o *dtma.Observed) { o.StartedAt = o.StartedAt.Add(time.Microsecond) },
		"FinishedAt":   func(o *dtma.Observed) { o.FinishedAt = time.Date(2024, 5, 6, 8, 0, 0, 0, time.UTC) },
		"ExitCode":     func(o *dtma.Observed) { o.ExitCode = -1 },
		"RestartCount": func(o *dtma.Observed) { o.RestartCount++ },
	} {
		next := want.Observed
		mutate(&next)
		changed, err = r.UpdateObserved(ctx, inst.ID, next)
		if err != nil || !changed {
			t.Errorf("UpdateObserved with a new %s = %v, %v; want true, nil", name, changed, err)
			continue
		}
		got := mustFind(t, r, inst.ID)
		want.Observed = next
		want.UpdatedAt = got.UpdatedAt
		assertEqual(t, got, want)
	}

	// Back to the zero observation is a change too.
	changed, err = r.UpdateObserved(ctx, inst.ID, dtma.Observed{})
	if err != nil || !changed {
		t.Fatalf("UpdateObserved(zero) = %v, %v; want true, nil", changed, err)
	}
	got = mustFind(t, r, inst.ID)
	want.Observed = dtma.Observed{}
	want.UpdatedAt = got.UpdatedAt
	assertEqual(t, got, want)
}

// testUpdateHealth: health is written only when its persisted part
// (state, last error, time of change) changes; UpdateInstance leaves it
// alone; another host's row is not found.
func (s *suite) testUpdateHealth(t *testing.T) {
	ctx := context.Background()
	r, other := s.open(t, HostA), s.open(t, HostB)
	inst := NewInstance("health")
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	inst.CreatedAt, inst.UpdatedAt = past, past
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if changed, err := r.UpdateHealth(ctx, inst.ID, dtma.HealthStatus{}); err != nil || changed {
		t.Fatalf("UpdateHealth(zero) on a fresh row = %v, %v; want false, nil", changed, err)
	}
	h := dtma.HealthStatus{State: dtma.HealthUnhealthy, LastError: "mcp ping: EOF",
		ChangedAt: time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600)),
		// Not persisted: they move with every probe.
		LastLatency: time.Second, ConsecutiveFailures: 3, CheckedAt: time.Now(), Detail: "tools=1"}
	if changed, err := r.UpdateHealth(ctx, inst.ID, h); err != nil || !changed {
		t.Fatalf("UpdateHealth(new) = %v, %v; want true, nil", changed, err)
	}
	got := mustFind(t, r, inst.ID)
	want := dtma.HealthStatus{State: h.State, LastError: h.LastError, ChangedAt: h.ChangedAt.UTC().Truncate(time.Microsecond)}
	if got.Health != want {
		t.Fatalf("health read back %+v, want %+v", got.Health, want)
	}
	if !got.Health.ChangedAt.IsZero() && got.Health.ChangedAt.Location() != time.UTC {
		t.Errorf("health changed_at in %v, want UTC", got.Health.ChangedAt.Location())
	}
	// A probe that only moves latency, failures or the check time is no write.
	again := h
	again.LastLatency, again.ConsecutiveFailures, again.CheckedAt = 2*time.Second, 4, time.Now()
	again.ChangedAt = h.ChangedAt.UTC().Add(-789) // below µs
	if changed, err := r.UpdateHealth(ctx, inst.ID, again); err != nil || changed {
		t.Fatalf("UpdateHealth(same persisted part) = %v, %v; want false, nil", changed, err)
	}
	// UpdateInstance leaves it alone.
	upd := got.Clone()
	upd.Health = dtma.HealthStatus{}
	upd.LastError = "other"
	if err := r.UpdateInstance(ctx, upd); err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	if got := mustFind(t, r, inst.ID); got.Health != want {
		t.Fatalf("UpdateInstance changed health to %+v", got.Health)
	}
	for name, next := range map[string]dtma.HealthStatus{
		"State":     {State: dtma.HealthHealthy, LastError: h.LastError, ChangedAt: want.ChangedAt},
		"LastError": {State: dtma.HealthHealthy, LastError: "", ChangedAt: want.ChangedAt},
		"ChangedAt": {State: dtma.HealthHealthy, ChangedAt: want.ChangedAt.Add(time.Second)},
	} {
		_ = name
		if changed, err := r.UpdateHealth(ctx, inst.ID, next); err != nil {
			t.Fatalf("UpdateHealth: %v", err)
		} else if !changed && mustFind(t, r, inst.ID).Health != next {
			t.Errorf("UpdateHealth with a new %s did not write", name)
		}
	}
	changed, err := other.UpdateHealth(ctx, inst.ID, h)
	assertCode(t, err, dtma.ENOTFOUND)
	if changed {
		t.Error("UpdateHealth of another host's row reported changed")
	}
	_, err = r.UpdateHealth(ctx, dtma.NewUUID(), h)
	assertCode(t, err, dtma.ENOTFOUND)
}

func (s *suite) testUpdateObservedNotFound(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	o := dtma.Observed{DockerStatus: dtma.DockerRunning}
	changed, err := ra.UpdateObserved(ctx, dtma.NewUUID(), o)
	assertCode(t, err, dtma.ENOTFOUND)
	if changed {
		t.Errorf("UpdateObserved of an unknown id reported changed")
	}
	a := NewInstance("owned-by-a")
	if err := ra.CreateInstance(ctx, a); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	changed, err = rb.UpdateObserved(ctx, a.ID, o)
	assertCode(t, err, dtma.ENOTFOUND)
	if changed {
		t.Errorf("UpdateObserved of another host's row reported changed")
	}
	// The same value as stored on another host's row is still not found.
	_, err = rb.UpdateObserved(ctx, a.ID, dtma.Observed{})
	assertCode(t, err, dtma.ENOTFOUND)
	assertEqual(t, mustFind(t, ra, a.ID), a)
}

func (s *suite) testDeleteInstance(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	a, keep := NewInstance("delete-me"), NewInstance("keep-me")
	for _, inst := range []*dtma.Instance{a, keep} {
		if err := ra.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
	}
	// Another host cannot delete a's row.
	if err := rb.DeleteInstance(ctx, a.ID); err != nil {
		t.Errorf("DeleteInstance of another host's row: %v, want nil", err)
	}
	assertEqual(t, mustFind(t, ra, a.ID), a)

	for i := 0; i < 2; i++ {
		if err := ra.DeleteInstance(ctx, a.ID); err != nil {
			t.Errorf("DeleteInstance #%d: %v", i+1, err)
		}
		_, err := ra.FindInstanceByID(ctx, a.ID)
		assertCode(t, err, dtma.ENOTFOUND)
	}
	if err := ra.DeleteInstance(ctx, dtma.NewUUID()); err != nil {
		t.Errorf("DeleteInstance of an unknown id: %v, want nil", err)
	}
	rows := mustFindAll(t, ra, dtma.InstanceFilter{AllHosts: true})
	if len(rows) != 1 || rows[0].ID != keep.ID {
		t.Errorf("after delete the store holds %s, want only %q", ids(rows), keep.ID)
	}
	// The name is free again.
	again := NewInstance("delete-me")
	again.AccountToolInstanceID = a.AccountToolInstanceID
	if err := ra.CreateInstance(ctx, again); err != nil {
		t.Errorf("CreateInstance reusing a deleted row's keys: %v", err)
	}
}

func (s *suite) testFindByIDNotFound(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	_, err := ra.FindInstanceByID(ctx, dtma.NewUUID())
	assertCode(t, err, dtma.ENOTFOUND)
	a := NewInstance("mine")
	if err := ra.CreateInstance(ctx, a); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	got, err := rb.FindInstanceByID(ctx, a.ID)
	assertCode(t, err, dtma.ENOTFOUND)
	if got != nil {
		t.Errorf("FindInstanceByID of another host's row returned %s", ids([]*dtma.Instance{got}))
	}
	// A string that is no UUID is simply not found.
	_, err = ra.FindInstanceByID(ctx, "not-a-uuid")
	assertCode(t, err, dtma.ENOTFOUND)
}

func (s *suite) testFindInstancesFilters(t *testing.T) {
	ctx := context.Background()
	ra, rb := s.open(t, HostA), s.open(t, HostB)
	a1, a2, a3 := NewInstance("one"), NewInstance("two"), NewInstance("three")
	a3.AccountToolInstanceID = ""
	b1 := NewInstance("one") // same name, other host
	b1.AccountToolInstanceID = a1.AccountToolInstanceID
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, inst := range []*dtma.Instance{a1, a2, a3} {
		inst.CreatedAt = base.Add(time.Duration(i) * time.Second)
		if err := ra.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
	}
	b1.CreatedAt = base.Add(time.Hour)
	if err := rb.CreateInstance(ctx, b1); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	str := func(s string) *string { return &s }
	tests := []struct {
		name   string
		r      dtma.Registry
		filter dtma.InstanceFilter
		want   []*dtma.Instance
	}{
		{"all of host a", ra, dtma.InstanceFilter{}, []*dtma.Instance{a1, a2, a3}},
		{"all of host b", rb, dtma.InstanceFilter{}, []*dtma.Instance{b1}},
		{"all hosts", ra, dtma.InstanceFilter{AllHosts: true}, []*dtma.Instance{a1, a2, a3, b1}},
		{"id", ra, dtma.InstanceFilter{ID: &a2.ID}, []*dtma.Instance{a2}},
		{"id of another host", ra, dtma.InstanceFilter{ID: &b1.ID}, nil},
		{"id all hosts", ra, dtma.InstanceFilter{ID: &b1.ID, AllHosts: true}, []*dtma.Instance{b1}},
		{"unknown id", ra, dtma.InstanceFilter{ID: str(dtma.NewUUID())}, nil},
		{"name", ra, dtma.InstanceFilter{Name: str("two")}, []*dtma.Instance{a2}},
		{"name host b", rb, dtma.InstanceFilter{Name: str("one")}, []*dtma.Instance{b1}},
		{"name all hosts", rb, dtma.InstanceFilter{Name: str("one"), AllHosts: true}, []*dtma.Instance{a1, b1}},
		{"name is exact", ra, dtma.InstanceFilter{Name: str("ONE")}, nil},
		{"unknown name", ra, dtma.InstanceFilter{Name: str("four")}, nil},
		{"account id", ra, dtma.InstanceFilter{AccountToolInstanceID: &a1.AccountToolInstanceID}, []*dtma.Instance{a1}},
		{"account id all hosts", ra, dtma.InstanceFilter{AccountToolInstanceID: &a1.AccountToolInstanceID, AllHosts: true}, []*dtma.Instance{a1, b1}},
		{"unknown account id", ra, dtma.InstanceFilter{AccountToolInstanceID: str(dtma.NewUUID())}, nil},
		{"container name", ra, dtma.InstanceFilter{ContainerName: &a3.ContainerName}, []*dtma.Instance{a3}},
		{"unknown container name", ra, dtma.InstanceFilter{ContainerName: str("dtma-nope")}, nil},
		{"name and container name", ra, dtma.InstanceFilter{Name: str("one"), ContainerName: &a1.ContainerName}, []*dtma.Instance{a1}},
		{"name and other container name", ra, dtma.InstanceFilter{Name: str("one"), ContainerName: &a2.ContainerName}, nil},
		{"every field", ra, dtma.InstanceFilter{ID: &a1.ID, Name: &a1.Name, AccountToolInstanceID: &a1.AccountToolInstanceID, ContainerName: &a1.ContainerName}, []*dtma.Instance{a1}},
	}
	for _, tt := range tests {
		got, err := tt.r.FindInstances(ctx, tt.filter)
		if err != nil {
			t.Errorf("%s: FindInstances: %v", tt.name, err)
			continue
		}
		if !slices.Equal(ids(got), ids(tt.want)) {
			t.Errorf("%s: FindInstances = %s, want %s", tt.name, ids(got), ids(tt.want))
			continue
		}
		for i := range got {
			assertEqual(t, got[i], tt.want[i])
		}
	}
}

// testFindInstancesPages: AfterID and Limit walk every host's rows in id
// order, a page at a time; rows added and removed between pages never
// make a row come twice or one that stayed go missing.
func (s *suite) testFindInstancesPages(t *testing.T) {
	ctx := context.Background()
	a, b := s.open(t, HostA), s.open(t, HostB)
	stayed := map[string]bool{}
	var victims []string
	for i := 0; i < 23; i++ {
		r := a
		if i%3 == 0 {
			r = b
		}
		inst := NewInstance(fmt.Sprintf("page-%02d", i))
		if err := r.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
		if i%5 == 4 && r == a {
			victims = append(victims, inst.ID)
		} else {
			stayed[inst.ID] = true
		}
	}
	seen := map[string]int{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatalf("no end to the pages")
		}
		got := mustFindAll(t, a, dtma.InstanceFilter{AllHosts: true, AfterID: after, Limit: 4})
		if len(got) > 4 {
			t.Fatalf("page of %d rows, limit 4", len(got))
		}
		for i, inst := range got {
			seen[inst.ID]++
			if inst.ID <= after || (i > 0 && inst.ID <= got[i-1].ID) {
				t.Errorf("page not in id order after %q: %s", after, inst.ID)
			}
		}
		if len(got) < 4 {
			break
		}
		after = got[len(got)-1].ID
		// Between pages: a row goes, another comes.
		if len(victims) > 0 {
			if err := a.DeleteInstance(ctx, victims[0]); err != nil {
				t.Fatalf("DeleteInstance: %v", err)
			}
			victims = victims[1:]
		}
		if err := b.CreateInstance(ctx, NewInstance(fmt.Sprintf("late-%02d", pages))); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("row %s returned %d times", id, n)
		}
	}
	for id := range stayed {
		if seen[id] != 1 {
			t.Errorf("row %s, there throughout, returned %d times", id, seen[id])
		}
	}
	if got := mustFindAll(t, a, dtma.InstanceFilter{Limit: 2}); len(got) != 2 || got[0].HostID != HostA || got[0].ID >= got[1].ID {
		t.Errorf("one host's first page of 2: %d rows", len(got))
	}
}

func (s *suite) testFindInstancesOrder(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	t0 := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	// Created in scrambled order; equal CreatedAt sorts by Name.
	rows := []struct {
		name    string
		created time.Time
	}{
		{"m", t0.Add(2 * time.Microsecond)},
		{"b", t0.Add(time.Microsecond)},
		{"z", t0},
		{"c", t0.Add(time.Microsecond)},
		{"a", t0.Add(time.Microsecond)},
		{"y", t0.Add(-time.Hour)},
	}
	for _, row := range rows {
		inst := NewInstance(row.name)
		inst.CreatedAt = row.created
		if err := r.CreateInstance(ctx, inst); err != nil {
			t.Fatalf("CreateInstance: %v", err)
		}
	}
	got := mustFindAll(t, r, dtma.InstanceFilter{})
	var names []string
	for _, inst := range got {
		names = append(names, inst.Name)
	}
	want := []string{"y", "z", "a", "b", "c", "m"}
	if !slices.Equal(names, want) {
		t.Errorf("FindInstances order = %v, want %v", names, want)
	}
}

func (s *suite) testConcurrentCreateDistinct(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			errs[i] = r.CreateInstance(ctx, NewInstance(fmt.Sprintf("concurrent-%02d", i)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent CreateInstance #%d: %v", i, err)
		}
	}
	if rows := mustFindAll(t, r, dtma.InstanceFilter{}); len(rows) != n {
		t.Errorf("after %d concurrent creates the store holds %d rows", n, len(rows))
	}
}

func (s *suite) testConcurrentCreateSameName(t *testing.T) {
	ctx := context.Background()
	// Two handles on one store, as two processes of one host would be
	// after a restart overlap, plus goroutines on each.
	r1, r2 := s.open(t, HostA), s.open(t, HostA)
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		r := r1
		if i%2 == 1 {
			r = r2
		}
		wg.Go(func() {
			inst := NewInstance("contended")
			inst.ContainerName = fmt.Sprintf("dtma-contended-%02d", i)
			errs[i] = r.CreateInstance(ctx, inst)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch dtma.ErrorCode(err) {
		case "":
			ok++
		case dtma.ECONFLICT:
		default:
			t.Errorf("concurrent CreateInstance #%d of one name: %v, want nil or code %s", i, err, dtma.ECONFLICT)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent creates of one name succeeded, want exactly 1", ok, n)
	}
	if rows := mustFindAll(t, r1, dtma.InstanceFilter{AllHosts: true}); len(rows) != 1 {
		t.Errorf("the store holds %d rows, want 1", len(rows))
	}
}

func (s *suite) testReturnsCopies(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("copies")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	want := inst.Clone()
	// Mutating the caller's struct after the call changes nothing stored.
	inst.Name = "changed"
	inst.Spec.Env["API_KEY"] = "changed"
	inst.Ports[0].HostPort = 1

	got := mustFind(t, r, want.ID)
	assertEqual(t, got, want)
	got.Name = "mutated"
	got.Spec.Env["API_KEY"] = "mutated"
	got.Spec.Ports[0].ContainerPort = 1
	got.Ports[0].HostPort = 2
	got.Status = dtma.StatusError
	assertEqual(t, mustFind(t, r, want.ID), want)

	list := mustFindAll(t, r, dtma.InstanceFilter{})
	if len(list) != 1 {
		t.Fatalf("FindInstances returned %d rows, want 1", len(list))
	}
	list[0].Spec.Env["GREETING"] = "mutated"
	list[0].Ports = append(list[0].Ports[:0], dtma.Port{ContainerPort: 9})
	assertEqual(t, mustFindAll(t, r, dtma.InstanceFilter{})[0], want)
}

func (s *suite) testClosed(t *testing.T) {
	ctx := context.Background()
	r := s.open(t, HostA)
	inst := NewInstance("closed")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertCode(t, r.Ping(ctx), dtma.EUNAVAILABLE)
	_, err := r.FindInstanceByID(ctx, inst.ID)
	assertCode(t, err, dtma.EUNAVAILABLE)
	_, err = r.FindInstances(ctx, dtma.InstanceFilter{})
	assertCode(t, err, dtma.EUNAVAILABLE)
	assertCode(t, r.CreateInstance(ctx, NewInstance("after-close")), dtma.EUNAVAILABLE)
	assertCode(t, r.UpdateInstance(ctx, inst), dtma.EUNAVAILABLE)
	_, err = r.UpdateObserved(ctx, inst.ID, dtma.Observed{DockerStatus: dtma.DockerRunning})
	assertCode(t, err, dtma.EUNAVAILABLE)
	assertCode(t, r.DeleteInstance(ctx, inst.ID), dtma.EUNAVAILABLE)

	// The data is still there for a new handle.
	assertEqual(t, mustFind(t, s.open(t, HostA), inst.ID), inst)
}

// mustFind returns the row with id or fails the test.
func mustFind(t testing.TB, r dtma.Registry, id string) *dtma.Instance {
	t.Helper()
	inst, err := r.FindInstanceByID(context.Background(), id)
	if err != nil {
		t.Fatalf("FindInstanceByID(%s): %v", id, err)
	}
	if inst == nil {
		t.Fatalf("FindInstanceByID(%s) returned nil without error", id)
	}
	return inst
}

func mustFindAll(t testing.TB, r dtma.Registry, f dtma.InstanceFilter) []*dtma.Instance {
	t.Helper()
	rows, err := r.FindInstances(context.Background(), f)
	if err != nil {
		t.Fatalf("FindInstances: %v", err)
	}
	return rows
}

func ids(rows []*dtma.Instance) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, r.ID+"("+r.HostID+"/"+r.Name+")")
	}
	return out
}

func assertCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := dtma.ErrorCode(err); got != code {
		t.Errorf("error %v has code %q, want %q", err, got, code)
	}
}

func assertNoSecret(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, msg := range []string{err.Error(), dtma.ErrorMessage(err)} {
		if strings.Contains(msg, secret) || strings.Contains(msg, "s3cr3t") {
			t.Errorf("error message contains an env value: %q", msg)
		}
	}
}

// Normalize returns a copy of inst as a registry stores it
// (dtma.StoredForm).
func Normalize(inst *dtma.Instance) *dtma.Instance { return dtma.StoredForm(inst) }

// assertEqual compares a read-back instance with what was written, field by
// field, after Normalize. Times must also be in UTC.
func assertEqual(t testing.TB, got, want *dtma.Instance) {
	t.Helper()
	for name, tm := range map[string]time.Time{
		"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt,
		"StartedAt": got.StartedAt, "FinishedAt": got.FinishedAt,
	} {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s %s: read back in location %v, want UTC", got.ID, name, tm.Location())
		}
	}
	g, w := Normalize(got), Normalize(want)
	gv, wv := reflect.ValueOf(g).Elem(), reflect.ValueOf(w).Elem()
	diffFields(t, got.ID, "", gv, wv)
}

func diffFields(t testing.TB, id, prefix string, g, w reflect.Value) {
	t.Helper()
	for i := 0; i < g.NumField(); i++ {
		f := g.Type().Field(i)
		name := prefix + f.Name
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			diffFields(t, id, name+".", g.Field(i), w.Field(i))
			continue
		}
		gf, wf := g.Field(i).Interface(), w.Field(i).Interface()
		if reflect.DeepEqual(gf, wf) {
			continue
		}
		if name == "Spec" {
			// Show which part differs without printing env values.
			gs, ws := gf.(dtma.Spec), wf.(dtma.Spec)
			if d := ws.Diff(gs); len(d) > 0 {
				t.Errorf("instance %s: Spec differs: %v", id, d)
			} else {
				t.Errorf("instance %s: Spec differs (port order or nil/empty)", id)
			}
			continue
		}
		t.Errorf("instance %s: %s = %#v, want %#v", id, name, gf, wf)
	}
}
