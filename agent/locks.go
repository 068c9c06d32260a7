package agent

import (
	"context"
	"sync"
)

// keyedMutex serializes operations per key (an instance name). Unlike a map
// of sync.Mutex it honours context cancellation while waiting and frees its
// entries when nobody holds or waits for them.
type keyedMutex struct {
	mu      sync.Mutex
	entries map[string]*lockEntry
}

type lockEntry struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders + waiters
}

func newKeyedMutex() *keyedMutex {
	return &keyedMutex{entries: map[string]*lockEntry{}}
}

func (k *keyedMutex) ref(key string) *lockEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.entries[key]
	if e == nil {
		e = &lockEntry{ch: make(chan struct{}, 1)}
		k.entries[key] = e
	}
	e.refs++
	return e
}

func (k *keyedMutex) unref(key string, e *lockEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.entries, key)
	}
}

// Lock waits for the key's lock or for ctx to end. On success it returns
// the unlock function; otherwise ctx's error.
func (k *keyedMutex) Lock(ctx context.Context, key string) (func(), error) {
	e := k.ref(key)
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; k.unref(key, e) }, nil
	case <-ctx.Done():
		k.unref(key, e)
		return nil, ctx.Err()
	}
}

// TryLock takes the key's lock only if it is free.
func (k *keyedMutex) TryLock(key string) (func(), bool) {
	e := k.ref(key)
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; k.unref(key, e) }, true
	default:
		k.unref(key, e)
		return nil, false
	}
}
