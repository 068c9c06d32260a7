package agent

import (
	"sync"
	"time"
)

// recreateBackoff spaces the agent's attempts to recreate containers that
// disappeared: after the n-th failure in a row the next attempt waits
// min·2^(n-1), at most max, measured with the injected clock. A success
// (or the row's removal) forgets the instance. It has its own lock.
type recreateBackoff struct {
	now      func() time.Time
	min, max time.Duration

	mu    sync.Mutex
	state map[string]*backoffState // by instance id
}

type backoffState struct {
	failures int
	next     time.Time
}

func newRecreateBackoff(now func() time.Time, min, max time.Duration) *recreateBackoff {
	return &recreateBackoff{now: now, min: min, max: max, state: map[string]*backoffState{}}
}

// allowed reports whether instance id may be recreated now.
func (b *recreateBackoff) allowed(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.state[id]
	return s == nil || !b.now().Before(s.next)
}

// due reports whether any instance's wait has passed (a relist should
// retry it).
func (b *recreateBackoff) due() bool {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.state {
		if !now.Before(s.next) {
			return true
		}
	}
	return false
}

// failed records a failed recreate of instance id and schedules the next.
func (b *recreateBackoff) failed(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.state[id]
	if s == nil {
		s = &backoffState{}
		b.state[id] = s
	}
	s.failures++
	d := b.min << min(s.failures-1, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	s.next = b.now().Add(d)
}

// forget drops instance id's backoff (recreated, or its row is gone).
func (b *recreateBackoff) forget(id string) {
	b.mu.Lock()
	delete(b.state, id)
	b.mu.Unlock()
}
