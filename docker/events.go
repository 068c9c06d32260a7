package docker

import (
	"context"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// isDockerAttribute reports whether k is one of the keys Docker adds to a
// container event's attributes besides the container's labels. (Docker sets
// them after copying the labels, so a label with one of these names could
// not be told apart anyway.)
func isDockerAttribute(k string) bool {
	switch k {
	case "name", "image", "exitCode", "signal", "execDuration", "execID":
		return true
	}
	return false
}

// Events streams the events of containers labelled dtma.host=HostID()
// (create, start, die, stop, kill, destroy, restart, ...) until ctx ends.
// The subscription is in place when Events returns. Each event's Labels are
// the container's labels: Docker's own attribute keys (name, image,
// exitCode, signal, execDuration, execID) are removed. ExitCode is set for
// "die". When the stream breaks (the daemon went away, for instance) the
// error channel receives one *dtma.Error, EUNAVAILABLE, and both channels
// are closed; the caller then resubscribes and relists, since events may
// have been missed. When ctx ends both channels are closed without an error.
// On a Runtime without a host id the error channel receives one EINVALID.
func (r *Runtime) Events(ctx context.Context) (<-chan dtma.ContainerEvent, <-chan error) {
	hostID := r.hostID
	out := make(chan dtma.ContainerEvent)
	errc := make(chan error, 1)
	if hostID == "" {
		errc <- errUnscoped("docker events")
		close(errc)
		close(out)
		return out, errc
	}

	ctx, cancel := context.WithCancel(ctx)
	res := r.client.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).
			Add("type", string(events.ContainerEventType)).
			Add("label", dtma.LabelHost+"="+hostID),
	})
	go func() {
		defer cancel()
		defer close(errc)
		defer close(out)
		for {
			select {
			case m := <-res.Messages:
				if m.Type != events.ContainerEventType || m.Actor.Attributes[dtma.LabelHost] != hostID {
					continue
				}
				select {
				case out <- toEvent(m):
				case <-ctx.Done():
					return
				}
			case err := <-res.Err:
				if ctx.Err() != nil || err == nil {
					return
				}
				e := r.wrap(err, "docker event stream for host %s", hostID)
				if de, ok := e.(*dtma.Error); ok && de.Code != dtma.EUNAVAILABLE {
					de.Code = dtma.EUNAVAILABLE
				}
				errc <- e
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errc
}

// toEvent converts a Docker container event.
func toEvent(m events.Message) dtma.ContainerEvent {
	ev := dtma.ContainerEvent{
		ContainerID: m.Actor.ID,
		Action:      string(m.Action),
		Labels:      make(map[string]string, len(m.Actor.Attributes)),
	}
	switch {
	case m.TimeNano != 0:
		ev.Time = time.Unix(0, m.TimeNano)
	case m.Time != 0:
		ev.Time = time.Unix(m.Time, 0)
	}
	for k, v := range m.Actor.Attributes {
		if !isDockerAttribute(k) {
			ev.Labels[k] = v
		}
	}
	if s, ok := m.Actor.Attributes["exitCode"]; ok {
		ev.ExitCode, _ = strconv.Atoi(s)
	}
	return ev
}
