package agent

import (
	"sync"
	"time"
)

// crashLoop is the restart history of instances: when Docker restarted
// each lately, measured with the injected clock. An instance restarted
// limit times within window is crash-looping. It has its own lock.
type crashLoop struct {
	now    func() time.Time
	limit  int
	window time.Duration

	mu       sync.Mutex
	restarts map[string][]time.Time // by instance id
}

func newCrashLoop(now func() time.Time, limit int, window time.Duration) *crashLoop {
	return &crashLoop{now: now, limit: limit, window: window, restarts: map[string][]time.Time{}}
}

// note records n Docker restarts of instance id now (at most limit are
// kept: more say nothing new).
func (c *crashLoop) note(id string, n int) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < n && i < c.limit; i++ {
		c.restarts[id] = append(c.restarts[id], now)
	}
}

// looping reports whether instance id restarted at least limit times
// within the window before now, forgetting older restarts.
func (c *crashLoop) looping(id string) bool {
	cutoff := c.now().Add(-c.window)
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.restarts[id][:0]
	for _, t := range c.restarts[id] {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	if len(kept) == 0 {
		delete(c.restarts, id)
	} else {
		c.restarts[id] = kept
	}
	return len(kept) >= c.limit
}

// forget drops instance id's history (its row is gone).
func (c *crashLoop) forget(id string) {
	c.mu.Lock()
	delete(c.restarts, id)
	c.mu.Unlock()
}
