package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/runtimetest"
)

// The test bed: an Agent on the in-memory registry (registrytest.Memory)
// and the fake runtime (runtimetest.Runtime), with a fake clock. Tests seed
// registry rows and containers, open the agent (New loads the rows), drive
// the reconciler by calling Relist (or relist(ctx, true) for a full one)
// or the event handler directly, and compare registry rows, the fake's
// containers and its call log with what the reconcile table in
// docs/ARCHITECTURE.md says. Nothing here sleeps: the only goroutines are
// those of Run in watch_test.go, which waits for conditions.

const testHost = "host-1"

// testImage is present in the fake daemon of every bed.
const testImage = "registry.example.com/tools/echo:1"

// secretValue is the env value planted in every seeded row and deploy; it
// must never appear in labels or errors.
const secretValue = "s3cr3t-token-value"

// resolve maps registry host names to the address the bed's resolver
// gives them (others: a public documentation address).
var resolve = map[string]string{"registry.internal.example": "10.0.0.5"}

// fakeClock is the agent's Config.Now (and the fake runtime's clock).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type bed struct {
	t     *testing.T
	ctx   context.Context
	reg   *registrytest.Memory
	rt    *runtimetest.Runtime
	clock *fakeClock
	cfg   Config
	a     *Agent
	ports int // next host port for seeded rows
}

// newBed returns a bed with an empty registry and daemon; the agent is made
// by open. Its config: host testHost, own port 30000, range 31000-31009,
// every host port free, crash loop 3 restarts in a minute, recreate backoff
// 1 s … 8 s, the fake clock.
func newBed(t *testing.T) *bed {
	t.Helper()
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	b := &bed{
		t:     t,
		ctx:   context.Background(),
		reg:   registrytest.NewMemory(testHost),
		rt:    runtimetest.New(testHost),
		clock: clock,
		cfg: Config{
			ListenPort: 30000, PortRangeStart: 31000, PortRangeEnd: 31009,
			PortFree:          func(string, int, string) bool { return true },
			CrashLoopRestarts: 3, CrashLoopWindow: time.Minute,
			RecreateBackoffMin: time.Second, RecreateBackoffMax: 8 * time.Second,
			StopTimeout: time.Second, ResyncInterval: time.Hour,
			Now: clock.Now,
			// Registry hosts resolve here, without DNS (the test
			// machine has no network but loopback): to a public
			// documentation address, or as resolve says.
			Registries: &dtma.RegistryPolicy{Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
				if addr, ok := resolve[host]; ok {
					return []netip.Addr{netip.MustParseAddr(addr)}, nil
				}
				return []netip.Addr{netip.MustParseAddr("203.0.113.10")}, nil
			}},
		},
		ports: 31500,
	}
	b.rt.AddImage(testImage)
	return b
}

// open makes the agent, loading the registry's rows.
func (b *bed) open() *Agent {
	b.t.Helper()
	a, err := New(b.ctx, b.cfg, b.reg, b.rt)
	if err != nil {
		b.t.Fatalf("New: %v", err)
	}
	b.a = a
	return a
}

func testSpec() dtma.Spec {
	return dtma.Spec{Image: testImage, Env: map[string]string{"API_KEY": secretValue},
		Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}}}
}

// labels returns the labels the agent gives inst's container.
func labels(inst *dtma.Instance) map[string]string {
	return (&Agent{hostID: testHost}).labelsFor(inst)
}

// seed writes a settled row for name to the registry and, unless state is
// "", a container for it in that state (running ones started an hour ago).
// mod, when set, changes the row before it is written (a pending
// operation, another desired state, ...). It returns the row as written.
func (b *bed) seed(name string, state dtma.DockerState, mod func(*dtma.Instance)) *dtma.Instance {
	b.t.Helper()
	spec := testSpec()
	b.ports++
	inst := &dtma.Instance{
		ID: dtma.NewUUID(), HostID: testHost, Name: name, ContainerName: dtma.ContainerName(name),
		Spec: spec, SpecHash: spec.Hash(),
		Ports:        []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: b.ports}},
		DesiredState: dtma.DesiredRunning, Tracking: dtma.TrackLabel,
		Observed: dtma.Observed{DockerStatus: dtma.DockerMissing},
	}
	if state != "" {
		c := b.container(inst, state)
		inst.Observed = normObserved(c.Observed())
		if state != dtma.DockerRunning {
			inst.DesiredState = dtma.DesiredStopped
		}
	}
	inst.Status = inst.SettledStatus()
	if mod != nil {
		mod(inst)
	}
	if err := b.reg.CreateInstance(b.ctx, inst); err != nil {
		b.t.Fatalf("seed %s: %v", name, err)
	}
	return inst.Clone()
}

// container adds inst's container (labels, env, ports as the agent makes
// them) to the fake daemon in state; running ones started an hour ago.
func (b *bed) container(inst *dtma.Instance, state dtma.DockerState) *dtma.Container {
	b.t.Helper()
	c := dtma.Container{
		Name: inst.ContainerName, Image: inst.Spec.Image, Labels: labels(inst),
		Env: inst.Spec.Env, Ports: inst.Ports, State: state,
	}
	if state != dtma.DockerCreated {
		c.StartedAt = b.clock.Now().Add(-time.Hour)
	}
	if state == dtma.DockerExited {
		c.FinishedAt = b.clock.Now().Add(-time.Minute)
	}
	id := b.rt.AddContainer(c)
	return b.rt.Container(id)
}

// row reads name's row from the registry; nil when there is none.
func (b *bed) row(name string) *dtma.Instance {
	b.t.Helper()
	rows, err := b.reg.ForHost(testHost).FindInstances(b.ctx, dtma.InstanceFilter{Name: &name})
	if err != nil {
		b.t.Fatalf("read registry: %v", err)
	}
	if len(rows) == 0 {
		return nil
	}
	return rows[0]
}

// mustRow is row that fails the test when there is none.
func (b *bed) mustRow(name string) *dtma.Instance {
	b.t.Helper()
	r := b.row(name)
	if r == nil {
		b.t.Fatalf("no registry row for %q", name)
	}
	return r
}

// rows returns the registry's rows of testHost.
func (b *bed) rows() []*dtma.Instance {
	b.t.Helper()
	rows, err := b.reg.ForHost(testHost).FindInstances(b.ctx, dtma.InstanceFilter{})
	if err != nil {
		b.t.Fatalf("read registry: %v", err)
	}
	return rows
}

// relist runs a full relist (every container inspected), as after start-up.
func (b *bed) relist() {
	b.t.Helper()
	if err := b.a.relist(b.ctx, true); err != nil {
		b.t.Fatalf("relist: %v", err)
	}
}

// calls returns the fake's call log as "Method(arg)" strings with
// container ids shortened to the container's name where known.
func (b *bed) calls() []string {
	var out []string
	for _, c := range b.rt.Calls() {
		out = append(out, c.String())
	}
	return out
}

// mutating returns the calls that change containers (create, start, stop,
// restart, remove), in order, with the container names they acted on.
func (b *bed) mutating(names map[string]string) []string {
	var out []string
	for _, c := range b.rt.Calls() {
		switch c.Method {
		case runtimetest.CreateContainer, runtimetest.StartContainer, runtimetest.StopContainer,
			runtimetest.RestartContainer, runtimetest.RemoveContainer:
			arg := c.Arg
			if n, ok := names[arg]; ok {
				arg = n
			}
			out = append(out, c.Method+"("+arg+")")
		}
	}
	return out
}

// names maps container ids to names for the containers the test saw.
func names(cs ...*dtma.Container) map[string]string {
	m := map[string]string{}
	for _, c := range cs {
		if c != nil {
			m[c.ID] = c.Name
		}
	}
	return m
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if dtma.ErrorCode(err) != code {
		t.Fatalf("error %v (code %q), want code %q", err, dtma.ErrorCode(err), code)
	}
	if err != nil && strings.Contains(err.Error(), secretValue) {
		t.Fatalf("error %q contains an env value", err)
	}
}

// noSecretInLabels fails when any container's labels carry an env value.
func (b *bed) noSecretInLabels() {
	b.t.Helper()
	for _, c := range b.rt.Containers() {
		for k, v := range c.Labels {
			if strings.Contains(v, secretValue) {
				b.t.Fatalf("container %s label %s carries an env value", c.Name, k)
			}
		}
	}
}

func sameStrings(a, b []string) bool { return slices.Equal(a, b) }

func fmtCalls(calls []string) string { return fmt.Sprintf("%q", calls) }

// failOps is a registry failure hook making the named operations (the
// registrytest.Op* constants) fail with EUNAVAILABLE.
func failOps(ops ...string) func(string) error {
	return func(op string) error {
		if slices.Contains(ops, op) {
			return registrytest.Unavailable(op)
		}
		return nil
	}
}
