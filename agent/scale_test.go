package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/runtimetest"
)

// overlapProbe makes the fake's InspectContainer report whether two
// inspects were ever in flight at once: the first call waits (up to a
// generous cap) for a second to arrive.
type overlapProbe struct {
	inFlight   atomic.Int64
	overlapped atomic.Bool
	second     chan struct{}
	once       sync.Once
	waited     atomic.Bool // only the first call waits
}

func probeOverlap(rt *runtimetest.Runtime) *overlapProbe {
	p := &overlapProbe{second: make(chan struct{})}
	rt.OnCall(runtimetest.InspectContainer, func(string) {
		if p.inFlight.Add(1) > 1 {
			p.overlapped.Store(true)
			p.once.Do(func() { close(p.second) })
			return
		}
		if !p.overlapped.Load() && p.waited.CompareAndSwap(false, true) {
			select {
			case <-p.second:
			case <-time.After(5 * time.Second): // sequential: no second call comes
			}
		}
	})
	rt.OnReturn(runtimetest.InspectContainer, func(string) { p.inFlight.Add(-1) })
	return p
}

// The first relist after start-up inspects every container side by side,
// and still catches a restart behind the agent's back while it was down:
// the state word stays "running", StartedAt and the restart count move.
func TestStartupRelistParallelCatchesRestartBehindBack(t *testing.T) {
	b := newBed(t)
	var insts []*dtma.Instance
	for i := 0; i < 40; i++ {
		insts = append(insts, b.seed(fmt.Sprintf("tool-%02d", i), dtma.DockerRunning, nil))
	}
	// While the agent was down: tool-17 restarted by Docker (same word).
	restarted := b.clock.Now().Add(-time.Minute)
	b.rt.Update(insts[17].ContainerName, func(c *dtma.Container) {
		c.StartedAt = restarted
		c.RestartCount = 1
	})
	probe := probeOverlap(b.rt)
	b.open()
	b.relist()

	if !probe.overlapped.Load() {
		t.Errorf("the start-up relist inspected one container at a time")
	}
	r := b.mustRow("tool-17")
	if !r.Observed.StartedAt.Equal(restarted) || r.Observed.RestartCount != 1 {
		t.Errorf("restart behind the back not recorded: started_at %v restart_count %d", r.Observed.StartedAt, r.Observed.RestartCount)
	}
	for _, inst := range insts {
		if inst.Name == "tool-17" {
			continue
		}
		if got := b.mustRow(inst.Name); !got.Observed.StartedAt.Equal(inst.Observed.StartedAt) || got.Status != dtma.StatusRunning {
			t.Errorf("%s: started_at %v status %s, want unchanged and running", inst.Name, got.Observed.StartedAt, got.Status)
		}
	}
	if got := b.mutating(nil); len(got) != 0 {
		t.Errorf("the start-up relist acted on Docker: %s", fmtCalls(got))
	}
}

// countingRegistry counts single and batch inserts.
type countingRegistry struct {
	dtma.Registry
	single, batches atomic.Int64
}

func (c *countingRegistry) CreateInstance(ctx context.Context, inst *dtma.Instance) error {
	c.single.Add(1)
	return c.Registry.CreateInstance(ctx, inst)
}

func (c *countingRegistry) CreateInstances(ctx context.Context, insts []*dtma.Instance) error {
	c.batches.Add(1)
	return c.Registry.CreateInstances(ctx, insts)
}

// A lost registry is rebuilt in bulk: every labelled container gets one
// row (in batches, not a transaction per row), none is created, started,
// stopped or removed, two containers claiming one name yield one row, and
// a container claiming an account id a row already has is left alone
// without costing the others their rows.
func TestBulkAdoptionNoDuplicates(t *testing.T) {
	const acct = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10"
	b := newBed(t)
	owner := b.seed("owner", dtma.DockerRunning, func(inst *dtma.Instance) { inst.AccountToolInstanceID = acct })
	_ = owner
	spec := testSpec()
	lab := func(name, iid, account string) map[string]string {
		kv := []string{dtma.LabelInstance, name, dtma.LabelInstanceID, iid, dtma.LabelSpecHash, spec.Hash(), dtma.LabelEnvNames, "API_KEY"}
		if account != "" {
			kv = append(kv, dtma.LabelAccountID, account)
		}
		return b.rt.Labels(kv...)
	}
	const n = 600 // more than one chunk
	for i := 0; i < n; i++ {
		b.rt.AddContainer(dtma.Container{Name: fmt.Sprintf("dtma-lost-%03d", i), Image: testImage,
			Labels: lab(fmt.Sprintf("lost-%03d", i), dtma.NewUUID(), ""),
			Env:    spec.Env, State: dtma.DockerRunning, StartedAt: b.clock.Now().Add(-time.Hour)})
	}
	// Two containers claiming one instance name, under different ids.
	b.rt.AddContainer(dtma.Container{Name: "dtma-twin-a", Image: testImage, Labels: lab("twin", dtma.NewUUID(), ""),
		Env: spec.Env, State: dtma.DockerRunning})
	b.rt.AddContainer(dtma.Container{Name: "dtma-twin-b", Image: testImage, Labels: lab("twin", dtma.NewUUID(), ""),
		Env: spec.Env, State: dtma.DockerRunning})
	// One claiming the account id of the row "owner".
	thief := b.rt.AddContainer(dtma.Container{Name: "dtma-thief", Image: testImage, Labels: lab("thief", dtma.NewUUID(), acct),
		Env: spec.Env, State: dtma.DockerRunning})

	reg := &countingRegistry{Registry: b.reg}
	a, err := New(b.ctx, b.cfg, reg, b.rt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.a = a
	before := len(b.rt.Containers())
	b.relist()
	b.relist() // a second relist adopts nothing more

	rows := b.rows()
	names := map[string]int{}
	ids := map[string]int{}
	for _, r := range rows {
		names[r.Name]++
		ids[r.ContainerID]++
	}
	for k, v := range names {
		if v > 1 {
			t.Errorf("%d rows named %q", v, k)
		}
	}
	for k, v := range ids {
		if v > 1 {
			t.Errorf("%d rows for container %s", v, k)
		}
	}
	if want := n + 2; len(rows) != want { // the lost ones, one twin, owner
		t.Errorf("%d rows after adoption, want %d", len(rows), want)
	}
	if names["twin"] != 1 || names["thief"] != 0 {
		t.Errorf("twin rows %d (want 1), thief rows %d (want 0)", names["twin"], names["thief"])
	}
	if b.rt.Container(thief) == nil || len(b.rt.Containers()) != before {
		t.Errorf("containers changed: %d before, %d after", before, len(b.rt.Containers()))
	}
	if got := b.mutating(nil); len(got) != 0 {
		t.Errorf("adoption acted on Docker: %s", fmtCalls(got))
	}
	if reg.batches.Load() == 0 || reg.single.Load() > int64(adoptChunk)+1 {
		t.Errorf("adoption wrote %d batches and %d single rows; want batches, and single rows only for a refused chunk",
			reg.batches.Load(), reg.single.Load())
	}
}

// A deploy the daemon cannot attach to a full bridge answers 503 (the
// error names the limit), leaves neither row nor container, and does not
// mark Docker unreachable: Docker answered.
func TestDeployBridgeFull(t *testing.T) {
	b := newBed(t)
	b.open()
	full := &dtma.Error{Code: dtma.EUNAVAILABLE, Err: fmt.Errorf("%w: exchange full", dtma.ErrBridgeFull),
		Message: "start container: the network bridge is full: a Linux bridge takes at most 1023 containers"}
	b.rt.FailNext(runtimetest.StartContainer, full)
	_, _, err := b.a.Deploy(b.ctx, deployReq("tool"))
	wantCode(t, err, dtma.EUNAVAILABLE)
	if !strings.Contains(dtma.ErrorMessage(err), "1023") {
		t.Errorf("error %q does not name the limit", dtma.ErrorMessage(err))
	}
	if b.row("tool") != nil || len(b.rt.Containers()) != 0 {
		t.Errorf("a failed deploy left a row (%v) or %d containers", b.row("tool") != nil, len(b.rt.Containers()))
	}
	if h := b.a.Health(b.ctx); !h.DockerOK {
		t.Errorf("a full bridge marked Docker unreachable: %s", h.DockerError)
	}
}

// ListFleetPage walks every host's rows a page at a time, in id order,
// this host's rows as the view has them.
func TestListFleetPage(t *testing.T) {
	b := newBed(t)
	for i := 0; i < 7; i++ {
		b.seed(fmt.Sprintf("tool-%d", i), dtma.DockerRunning, nil)
	}
	other := b.reg.ForHost("host-2")
	for i := 0; i < 5; i++ {
		spec := testSpec()
		if err := other.CreateInstance(b.ctx, &dtma.Instance{Name: fmt.Sprintf("other-%d", i), ContainerName: fmt.Sprintf("dtma-other-%d", i),
			Spec: spec, SpecHash: spec.Hash(), DesiredState: dtma.DesiredRunning, Status: dtma.StatusRunning}); err != nil {
			t.Fatal(err)
		}
	}
	b.open()
	b.relist()
	seen := map[string]bool{}
	after := ""
	for {
		page, err := b.a.ListFleetPage(b.ctx, after, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, inst := range page {
			if seen[inst.ID] || inst.ID <= after {
				t.Errorf("row %s twice or out of order", inst.ID)
			}
			seen[inst.ID] = true
			if inst.HostID == testHost && inst.ObservedAt.IsZero() {
				t.Errorf("this host's row %s not from the view (no observed_at)", inst.Name)
			}
		}
		if len(page) < 5 {
			break
		}
		after = page[len(page)-1].ID
	}
	if len(seen) != 12 {
		t.Errorf("%d rows over the pages, want 12", len(seen))
	}
}
