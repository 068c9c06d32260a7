package dtma

import "time"

// EventType says what happened to an instance.
type EventType string

const (
	EventCreated EventType = "created" // a row was created (deploy, adoption)
	EventChanged EventType = "changed" // status, docker state, health or drift changed
	EventRemoved EventType = "removed" // the row was deleted
)

// Event is one change of an instance, as the agent's view records it. The
// event stream (GET /v1/events) numbers them; an Event never carries env
// values.
type Event struct {
	Type                  EventType
	Time                  time.Time
	InstanceID            string
	Name                  string
	AccountToolInstanceID string
	Status                Status
	DockerStatus          DockerState
	Health                HealthState
	Drift                 bool
	// Changed names what changed for EventChanged: any of "status",
	// "docker_status", "health", "drift".
	Changed []string
}

// EventFromInstance returns an event of type t describing inst's state.
func EventFromInstance(t EventType, inst *Instance, at time.Time) Event {
	return Event{Type: t, Time: at, InstanceID: inst.ID, Name: inst.Name, AccountToolInstanceID: inst.AccountToolInstanceID,
		Status: inst.Status, DockerStatus: inst.DockerStatus, Health: inst.Health.State, Drift: inst.Drift()}
}

// InstanceEvent compares an instance before and after a write and returns
// the change event, or false when nothing an event shows changed (status,
// docker status, health, drift). before nil is a creation, after nil a
// removal.
func InstanceEvent(before, after *Instance, at time.Time) (Event, bool) {
	var b, a *Event
	if before != nil {
		e := EventFromInstance(EventChanged, before, at)
		b = &e
	}
	if after != nil {
		e := EventFromInstance(EventChanged, after, at)
		a = &e
	}
	return EventBetween(b, a, at)
}

// EventBetween is InstanceEvent on what EventFromInstance shows of the
// instance before and after (before nil: a creation; after nil: a
// removal): it returns the same event, so that a caller can keep an
// instance's small Event rather than the instance. It keeps neither
// pointer.
func EventBetween(before, after *Event, at time.Time) (Event, bool) {
	switch {
	case before == nil && after == nil:
		return Event{}, false
	case before == nil:
		e := *after
		e.Type, e.Time, e.Changed = EventCreated, at, nil
		return e, true
	case after == nil:
		e := *before
		e.Type, e.Time, e.Changed = EventRemoved, at, nil
		return e, true
	}
	e := *after
	e.Type, e.Time, e.Changed = EventChanged, at, nil
	if before.Status != after.Status {
		e.Changed = append(e.Changed, "status")
	}
	if before.DockerStatus != after.DockerStatus {
		e.Changed = append(e.Changed, "docker_status")
	}
	if before.Health != after.Health {
		e.Changed = append(e.Changed, "health")
	}
	if before.Drift != after.Drift {
		e.Changed = append(e.Changed, "drift")
	}
	return e, len(e.Changed) > 0
}

// EventSink receives instance events. Publish must not block the caller
// (the agent calls it while recording a change) and must be safe for
// concurrent use. Implementation: http.EventHub.
type EventSink interface {
	Publish(Event)
}

// EventSinks publishes every event to each of its sinks, in order.
type EventSinks []EventSink

// Publish implements EventSink.
func (s EventSinks) Publish(e Event) {
	for _, sink := range s {
		sink.Publish(e)
	}
}
