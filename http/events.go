package http

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Defaults of an EventHub.
const (
	DefaultEventBuffer     = 1024 // events kept for Last-Event-ID resumption
	DefaultSubscriberQueue = 256  // events queued per subscriber before it is dropped
	eventWriteTimeout      = 10 * time.Second
	eventKeepAlive         = 15 * time.Second
)

// EventHub numbers instance events, keeps the last Buffer of them, and
// fans them out to GET /v1/events subscribers. Publish never blocks: a
// subscriber whose queue is full is dropped (its stream ends with a
// "dropped" event) rather than slowing the agent. It implements
// dtma.EventSink.
type EventHub struct {
	// Buffer is how many events are kept for resumption
	// (DefaultEventBuffer when 0); Queue how many may wait for one
	// subscriber (DefaultSubscriberQueue when 0).
	Buffer, Queue int
	// OnDrop, when set, is called for every subscriber dropped (metrics).
	OnDrop func()
	// OnSubscribers, when set, is told the number of subscribers on every
	// change (metrics).
	OnSubscribers func(n int)

	mu     sync.Mutex
	ring   []numbered // the last Buffer events, oldest first
	lastID uint64     // the id of the newest event (0: none yet)
	subs   map[*subscriber]struct{}
}

type numbered struct {
	id uint64
	e  dtma.Event
}

type subscriber struct {
	filter  string
	ch      chan numbered
	dropped chan struct{} // closed when the hub dropped the subscriber
}

func (f *subscriber) match(e dtma.Event) bool {
	return f.filter == "" || f.filter == e.InstanceID || f.filter == e.Name || (e.AccountToolInstanceID != "" && f.filter == e.AccountToolInstanceID)
}

// Publish numbers e, keeps it, and queues it for every matching
// subscriber. It never blocks.
func (h *EventHub) Publish(e dtma.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	size := h.Buffer
	if size <= 0 {
		size = DefaultEventBuffer
	}
	h.lastID++
	n := numbered{id: h.lastID, e: e}
	if len(h.ring) >= size {
		copy(h.ring, h.ring[1:])
		h.ring = h.ring[:size-1]
	}
	h.ring = append(h.ring, n)
	for s := range h.subs {
		if !s.match(e) {
			continue
		}
		select {
		case s.ch <- n:
		default:
			close(s.dropped)
			delete(h.subs, s)
			if h.OnDrop != nil {
				h.OnDrop()
			}
			h.countSubs()
		}
	}
}

func (h *EventHub) countSubs() {
	if h.OnSubscribers != nil {
		h.OnSubscribers(len(h.subs))
	}
}

// subscribe registers a subscriber and returns, atomically with it, the
// backlog after lastID (when resume) and whether the events after lastID
// are no longer all kept (resync: the client must re-read the state).
func (h *EventHub) subscribe(filter string, resume bool, lastID uint64) (s *subscriber, backlog []numbered, resync bool, head uint64) {
	queue := h.Queue
	if queue <= 0 {
		queue = DefaultSubscriberQueue
	}
	s = &subscriber{filter: filter, ch: make(chan numbered, queue), dropped: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.countSubs()
	head = h.lastID
	if !resume {
		return s, nil, false, head
	}
	switch {
	case lastID > h.lastID:
		// An id from before the agent restarted (ids start at 1 each
		// run): nothing can be said about what was missed.
		return s, nil, true, head
	case lastID == h.lastID:
		return s, nil, false, head
	case len(h.ring) == 0 || h.ring[0].id > lastID+1:
		return s, nil, true, head
	}
	for _, n := range h.ring {
		if n.id > lastID && s.match(n.e) {
			backlog = append(backlog, n)
		}
	}
	return s, backlog, false, head
}

func (h *EventHub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.countSubs()
	}
}

// EventJSON is one event's data on the stream.
type EventJSON struct {
	Type                  dtma.EventType `json:"type"`
	Time                  time.Time      `json:"time"`
	InstanceID            string         `json:"instance_id"`
	Name                  string         `json:"name"`
	AccountToolInstanceID *string        `json:"account_tool_instance_id"`
	Status                dtma.Status    `json:"dtma_status"`
	DockerStatus          string         `json:"docker_status"`
	Health                *string        `json:"health"`
	Drift                 bool           `json:"drift"`
	Changed               []string       `json:"changed,omitempty"`
}

func toEventJSON(e dtma.Event) EventJSON {
	j := EventJSON{Type: e.Type, Time: e.Time.UTC(), InstanceID: e.InstanceID, Name: e.Name, AccountToolInstanceID: strPtr(e.AccountToolInstanceID),
		Status: e.Status, DockerStatus: string(e.DockerStatus), Health: strPtr(string(e.Health)), Drift: e.Drift, Changed: e.Changed}
	if j.DockerStatus == "" {
		j.DockerStatus = "unknown"
	}
	return j
}

// handleV1Events serves GET /v1/events: Server-Sent Events of instance
// changes. Each event has an id; a client reconnecting with Last-Event-ID
// (header, or the last_event_id query parameter) gets what it missed from
// the hub's buffer, or one "resync" event when that is no longer kept (it
// must then re-read GET /v1/instances). ?instance=REF keeps only events of
// the instance with that id, name or account id. A client that does not
// keep up is sent a final "dropped" event and disconnected; it may
// reconnect with its Last-Event-ID.
func (s *Server) handleV1Events(w http.ResponseWriter, r *http.Request) {
	if s.Events == nil {
		s.writeError(w, r, dtma.Errorf(dtma.EUNAVAILABLE, "the event stream is not enabled on this agent"))
		return
	}
	q := r.URL.Query()
	filter := strings.TrimSpace(q.Get("instance"))
	if len(filter) > dtma.MaxNameLen {
		s.writeError(w, r, dtma.FieldErrorf(dtma.EINVALID, "instance", "at most %d bytes", dtma.MaxNameLen))
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id")
	}
	var lastID uint64
	resume := last != ""
	if resume {
		n, err := strconv.ParseUint(strings.TrimSpace(last), 10, 64)
		if err != nil {
			s.writeError(w, r, dtma.FieldErrorf(dtma.EINVALID, "Last-Event-ID", "must be an event id (a non-negative integer)"))
			return
		}
		lastID = n
	}
	rc := http.NewResponseController(w)
	sub, backlog, resync, head := s.Events.subscribe(filter, resume, lastID)
	defer s.Events.unsubscribe(sub)

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(id uint64, event string, data any) bool {
		b, _ := json.Marshal(data)
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	if resync && !write(head, "resync", map[string]any{"reason": "events after the given id are no longer kept; re-read GET /v1/instances", "last_event_id": head}) {
		return
	}
	for _, n := range backlog {
		if !write(n.id, "instance", toEventJSON(n.e)) {
			return
		}
	}
	keep := time.NewTicker(eventKeepAlive)
	defer keep.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.streamsDone():
			return
		case n := <-sub.ch:
			if !write(n.id, "instance", toEventJSON(n.e)) {
				return
			}
		case <-sub.dropped:
			// What is still queued is not sent: the client is behind, and
			// resumes from its last id (from the buffer, or a resync).
			_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = fmt.Fprintf(w, "event: dropped\ndata: {\"reason\":\"the client did not keep up; reconnect with Last-Event-ID\"}\n\n")
			_ = rc.Flush()
			return
		case <-keep.C:
			_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// streamsDone is closed when the server shuts down, so long-lived streams
// end instead of holding the graceful shutdown for its whole grace period.
func (s *Server) streamsDone() <-chan struct{} {
	s.streamsOnce.Do(func() { s.streams, s.stopStreams = context.WithCancel(context.Background()) })
	return s.streams.Done()
}
