package registrytest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
)

// The suite is checked against the in-memory registry (NewMemory), which
// keeps every promise, so that a failure of a real implementation points at
// the implementation rather than the suite.

// memOpener returns an open function keeping one store per test.
func memOpener[T testing.TB]() func(t T, hostID string) dtma.Registry {
	var mu sync.Mutex
	stores := map[testing.TB]*registrytest.Memory{}
	return func(t T, hostID string) dtma.Registry {
		mu.Lock()
		s, ok := stores[t]
		if !ok {
			s = registrytest.NewMemory(hostID)
			stores[t] = s
		}
		mu.Unlock()
		r := s.ForHost(hostID)
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

// TestMemoryFail: the failure hook makes every method of one handle fail
// with the hook's error and change nothing; removing it restores the handle;
// other handles on the store are unaffected.
func TestMemoryFail(t *testing.T) {
	ctx := context.Background()
	r := registrytest.NewMemory(registrytest.HostA)
	inst := registrytest.NewInstance("one")
	if err := r.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	var ops []string
	r.SetFail(func(op string) error { ops = append(ops, op); return registrytest.Unavailable(op) })
	other := r.ForHost(registrytest.HostA)
	checks := map[string]error{
		registrytest.OpPing:           r.Ping(ctx),
		registrytest.OpCreateInstance: r.CreateInstance(ctx, registrytest.NewInstance("two")),
		registrytest.OpUpdateInstance: r.UpdateInstance(ctx, inst),
		registrytest.OpDeleteInstance: r.DeleteInstance(ctx, inst.ID),
	}
	_, checks[registrytest.OpUpdateObserved] = r.UpdateObserved(ctx, inst.ID, dtma.Observed{DockerStatus: dtma.DockerRunning})
	_, checks[registrytest.OpFindInstanceByID] = r.FindInstanceByID(ctx, inst.ID)
	_, checks[registrytest.OpFindInstances] = r.FindInstances(ctx, dtma.InstanceFilter{})
	for op, err := range checks {
		if dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
			t.Errorf("%s with the hook failing: %v, want unavailable", op, err)
		}
	}
	if len(ops) != len(checks) {
		t.Errorf("hook saw %v, want one call per method", ops)
	}
	rows, err := other.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil || len(rows) != 1 || rows[0].ID != inst.ID || rows[0].DockerStatus != dtma.DockerUnknown {
		t.Fatalf("another handle reads %d rows, %v: the failed calls must change nothing", len(rows), err)
	}
	r.SetFail(nil)
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("hook removed: %v", err)
	}
}
