package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// fakeTool answers probes as told and counts them.
type fakeTool struct {
	mu      sync.Mutex
	fail    map[string]bool
	calls   map[string]int
	cur     atomic.Int32
	peak    atomic.Int32
	hold    time.Duration
	changes chan change
}

type change struct {
	id string
	st dtma.HealthStatus
}

func newFake() *fakeTool {
	return &fakeTool{fail: map[string]bool{}, calls: map[string]int{}, changes: make(chan change, 1000)}
}

func (f *fakeTool) probe(ctx context.Context, c dtma.HealthCheck, addr string) Result {
	n := f.cur.Add(1)
	defer f.cur.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.calls[addr]++
	fail := f.fail[addr]
	f.mu.Unlock()
	if f.hold > 0 {
		select {
		case <-time.After(f.hold):
		case <-ctx.Done():
		}
	}
	if fail {
		return Result{Err: errors.New("refused")}
	}
	return Result{Latency: time.Millisecond}
}

func (f *fakeTool) set(addr string, fail bool) {
	f.mu.Lock()
	f.fail[addr] = fail
	f.mu.Unlock()
}

func (f *fakeTool) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[addr]
}

// waitState waits (cap 10 s) for a change of id to state.
func (f *fakeTool) waitState(t *testing.T, id string, want dtma.HealthState) dtma.HealthStatus {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-f.changes:
			if c.id == id && c.st.State == want {
				return c.st
			}
		case <-deadline:
			t.Fatalf("%s never became %s", id, want)
		}
	}
}

func newProber(f *fakeTool, conc int) *Prober {
	return New(Config{Concurrency: conc, FirstProbe: time.Millisecond, Probe: f.probe,
		OnChange: func(id string, st dtma.HealthStatus) { f.changes <- change{id, st} }})
}

func TestProberTransitions(t *testing.T) {
	f := newFake()
	p := newProber(f, 4)
	defer p.Close()
	check := dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second, Retries: 2}
	p.Set(Target{ID: "a", Check: check, Addr: "a", StartedAt: time.Now()})
	f.waitState(t, "a", dtma.HealthStarting)
	f.waitState(t, "a", dtma.HealthHealthy)
	f.set("a", true)
	st := f.waitState(t, "a", dtma.HealthUnhealthy)
	if st.ConsecutiveFailures != 2 || st.LastError != "refused" {
		t.Fatalf("unhealthy status %+v", st)
	}
	f.set("a", false)
	st = f.waitState(t, "a", dtma.HealthHealthy)
	if st.ConsecutiveFailures != 0 || st.ChangedAt.IsZero() {
		t.Fatalf("recovered status %+v", st)
	}
	// Exactly one change per transition: no write per probe.
	calls := f.count("a")
	for f.count("a") < calls+2 {
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case c := <-f.changes:
		t.Fatalf("a change without a transition: %+v", c)
	default:
	}
}

func TestProberStartPeriod(t *testing.T) {
	f := newFake()
	f.set("a", true)
	p := newProber(f, 4)
	defer p.Close()
	p.Set(Target{ID: "a", Check: dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second, Retries: 1, StartPeriod: time.Hour}, Addr: "a", StartedAt: time.Now()})
	for f.count("a") < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	if st, _ := p.Status("a"); st.State != dtma.HealthStarting || st.ConsecutiveFailures != 0 {
		t.Fatalf("failures within the start period count: %+v", st)
	}
}

func TestProberRemoveStopsProbing(t *testing.T) {
	f := newFake()
	p := newProber(f, 4)
	defer p.Close()
	p.Set(Target{ID: "a", Check: dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second}, Addr: "a"})
	f.waitState(t, "a", dtma.HealthHealthy)
	p.Remove("a")
	n := f.count("a")
	// Another target's probes are the clock: 3 of its probes pass, none of a's.
	p.Set(Target{ID: "b", Check: dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second}, Addr: "b"})
	for f.count("b") < 3 {
		time.Sleep(50 * time.Millisecond)
	}
	if f.count("a") != n {
		t.Fatalf("a was probed after its removal")
	}
	if _, ok := p.Status("a"); ok {
		t.Fatal("a still has a status")
	}
}

func TestProberBoundsConcurrency(t *testing.T) {
	f := newFake()
	f.hold = 50 * time.Millisecond
	p := newProber(f, 3)
	defer p.Close()
	for i := 0; i < 40; i++ {
		id := string(rune('A' + i))
		p.Set(Target{ID: id, Check: dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second}, Addr: id})
	}
	healthy := map[string]bool{}
	for len(healthy) < 40 {
		select {
		case c := <-f.changes:
			if c.st.State == dtma.HealthHealthy {
				healthy[c.id] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 40 became healthy", len(healthy))
		}
	}
	if peak := f.peak.Load(); peak > 3 || peak < 2 {
		t.Fatalf("peak concurrency %d, bound 3", peak)
	}
}

// TestProberSeededState: a target set with a recorded verdict resumes from
// it (no starting, no change reported) and changes only on a new verdict.
func TestProberSeededState(t *testing.T) {
	f := newFake()
	p := newProber(f, 4)
	defer p.Close()
	check := dtma.HealthCheck{Type: dtma.CheckTCP, Interval: time.Second, Retries: 1}
	p.Set(Target{ID: "a", Check: check, Addr: "a", Initial: dtma.HealthStatus{State: dtma.HealthHealthy, ChangedAt: time.Unix(1, 0)}})
	for f.count("a") < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case c := <-f.changes:
		t.Fatalf("a seeded healthy target reported %+v", c)
	default:
	}
	// The same target again (another Initial) is no reset.
	p.Set(Target{ID: "a", Check: check, Addr: "a"})
	if st, _ := p.Status("a"); st.State != dtma.HealthHealthy {
		t.Fatalf("re-set reset the state: %+v", st)
	}
	f.set("a", true)
	f.waitState(t, "a", dtma.HealthUnhealthy)
}
