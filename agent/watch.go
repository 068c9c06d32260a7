package agent

// The reconciler's loop: subscribe to Docker's events, relist, apply
// events through a queue that never blocks the stream.

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Run is the reconciler. It subscribes to Docker's events for this host,
// then lists this host's containers once and makes the registry agree with
// them (Relist), then applies events as they come; it relists after every
// reconnect of the event stream, every ResyncInterval, and soon after an
// event that may need action (a container destroyed, an unknown container).
// Docker drops events for slow subscribers and forgets them across its own
// restarts, so events only make the agent faster; the relist is the source
// of truth. Run returns when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	bridgesDone := make(chan struct{})
	go func() { defer close(bridgesDone); a.runBridges(ctx) }()
	defer func() { <-bridgesDone }()
	wait := time.Second
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		events, errs := a.rt.Events(sctx)
		// Full: whatever happened while the agent was not subscribed
		// (down, or its stream broken) may have left no trace in a list.
		if err := a.relist(ctx, true); err != nil {
			cancel()
			level := slog.LevelDebug // noteDocker already said Docker went away
			if wait == time.Second {
				level = slog.LevelWarn
			}
			a.log.Log(ctx, level, "relist failed; retrying", "in", wait.String(), "err", err)
			if !a.waitRetry(ctx, wait) {
				break
			}
			// A failed attempt against a daemon that is down costs next to
			// nothing, so the cap stays short: the agent relists within
			// seconds of Docker coming back, even with no API traffic.
			wait = min(wait*2, 5*time.Second)
			continue
		}
		wait = time.Second
		err := a.watch(ctx, events, errs)
		cancel()
		if ctx.Err() != nil {
			break
		}
		a.log.Warn("docker event stream broken; resubscribing", "err", err)
		a.obs.Resubscribed()
		if !sleep(ctx, 500*time.Millisecond) {
			break
		}
	}
	return nil
}

// waitRetry waits d before the next attempt to reach Docker, or less when
// an API call has meanwhile found Docker reachable again (noteDocker asks
// for a relist): the reconciler then relists at once. It returns false
// when ctx ends.
func (a *Agent) waitRetry(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a.kick:
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// eventQueue decouples reading Docker's event stream (which must never
// block: Docker drops events for slow subscribers) from handling them.
type eventQueue struct {
	mu     sync.Mutex
	byID   map[string]dtma.ContainerEvent // latest event per container
	order  []string
	signal chan struct{}
}

func (q *eventQueue) push(ev dtma.ContainerEvent) {
	q.mu.Lock()
	if _, ok := q.byID[ev.ContainerID]; !ok {
		q.order = append(q.order, ev.ContainerID)
	}
	prev, had := q.byID[ev.ContainerID]
	if !had || prev.Action != "destroy" {
		q.byID[ev.ContainerID] = ev
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) drain() []dtma.ContainerEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]dtma.ContainerEvent, 0, len(q.order))
	for _, id := range q.order {
		out = append(out, q.byID[id])
	}
	q.byID = map[string]dtma.ContainerEvent{}
	q.order = nil
	return out
}

// watch applies events until the stream breaks or ctx ends.
func (a *Agent) watch(ctx context.Context, events <-chan dtma.ContainerEvent, errs <-chan error) error {
	q := &eventQueue{byID: map[string]dtma.ContainerEvent{}, signal: make(chan struct{}, 1)}
	broken := make(chan error, 1)
	go func() {
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					broken <- fmt.Errorf("event stream closed")
					return
				}
				q.push(ev)
			case err, ok := <-errs:
				if !ok {
					err = fmt.Errorf("event stream closed")
				}
				broken <- err
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	relistSoon := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-broken:
			a.health.noteDocker(dtma.Errorf(dtma.EUNAVAILABLE, "docker event stream: %v", err))
			return err
		case <-q.signal:
			for _, ev := range q.drain() {
				if a.applyEvent(ctx, ev) {
					relistSoon = true
				}
			}
		case <-a.kick:
			relistSoon = true
		case <-tick.C:
			if relistSoon || a.recreate.due() {
				relistSoon = false
				if err := a.Relist(ctx); err != nil {
					a.log.Warn("relist failed", "err", err)
					relistSoon = true
				}
			} else {
				a.flush(ctx)
			}
		case <-resync.C:
			if err := a.Relist(ctx); err != nil {
				a.log.Warn("relist failed", "err", err)
			}
		}
	}
}

// applyEvent refreshes the instance an event is about. It reports whether
// a relist is needed (the container is gone, or no record knows it).
func (a *Agent) applyEvent(ctx context.Context, ev dtma.ContainerEvent) bool {
	inst := a.view.forContainer(ev.ContainerID, ev.Labels[dtma.LabelInstanceID])
	if inst == nil {
		return ev.Action != "destroy"
	}
	inst, unlock, ok := a.lockCurrent(inst)
	if !ok {
		return false // an operation is running (it records the outcome), or the instance is gone
	}
	defer unlock()
	c, err := a.rt.InspectContainer(ctx, ev.ContainerID)
	if err != nil {
		return dtma.ErrorCode(err) == dtma.ENOTFOUND
	}
	if inst.ContainerID != "" && inst.ContainerID != c.ID {
		return true // a second container claims this instance: let the relist decide
	}
	a.observe(ctx, inst, c) // records c.ID as the instance's container
	return false
}
