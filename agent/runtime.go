package agent

import (
	"context"
	"io"
	"time"

	"github.com/agentopia/dtma"
)

// healthRuntime is the dtma.Runtime the agent calls: it passes every call
// to the real one and records Docker's health from its outcome
// (health.noteDocker), so no call site has to. By noteDocker's rules an
// image registry's failure (dtma.ErrRegistry) or an error other than
// EUNAVAILABLE (not found, conflict) does not mark Docker down, and a call
// that succeeds after Docker was down asks for a relist. The event
// stream's breaking is recorded by the reconciler (watch), which sees it.
type healthRuntime struct {
	rt     dtma.Runtime
	health *health
}

var _ dtma.Runtime = healthRuntime{}

// note records err (nil: Docker answered) and returns it.
func (r healthRuntime) note(err error) error {
	r.health.noteDocker(err)
	return err
}

// HostID implements dtma.Runtime.
func (r healthRuntime) HostID() string { return r.rt.HostID() }

// Ping implements dtma.Runtime.
func (r healthRuntime) Ping(ctx context.Context) error { return r.note(r.rt.Ping(ctx)) }

// EnsureImage implements dtma.Runtime.
func (r healthRuntime) EnsureImage(ctx context.Context, image string, policy dtma.PullPolicy) (string, error) {
	w, err := r.rt.EnsureImage(ctx, image, policy)
	return w, r.note(err)
}

// CreateContainer implements dtma.Runtime.
func (r healthRuntime) CreateContainer(ctx context.Context, cfg dtma.ContainerConfig) (string, error) {
	id, err := r.rt.CreateContainer(ctx, cfg)
	return id, r.note(err)
}

// StartContainer implements dtma.Runtime.
func (r healthRuntime) StartContainer(ctx context.Context, id string) (bool, error) {
	already, err := r.rt.StartContainer(ctx, id)
	return already, r.note(err)
}

// StopContainer implements dtma.Runtime.
func (r healthRuntime) StopContainer(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	already, err := r.rt.StopContainer(ctx, id, timeout)
	return already, r.note(err)
}

// RestartContainer implements dtma.Runtime.
func (r healthRuntime) RestartContainer(ctx context.Context, id string, timeout time.Duration) error {
	return r.note(r.rt.RestartContainer(ctx, id, timeout))
}

// RemoveContainer implements dtma.Runtime.
func (r healthRuntime) RemoveContainer(ctx context.Context, id string) error {
	return r.note(r.rt.RemoveContainer(ctx, id))
}

// InspectContainer implements dtma.Runtime.
func (r healthRuntime) InspectContainer(ctx context.Context, idOrName string) (*dtma.Container, error) {
	c, err := r.rt.InspectContainer(ctx, idOrName)
	return c, r.note(err)
}

// ListContainers implements dtma.Runtime.
func (r healthRuntime) ListContainers(ctx context.Context) ([]*dtma.Container, error) {
	list, err := r.rt.ListContainers(ctx)
	return list, r.note(err)
}

// ContainerLogs implements dtma.Runtime.
func (r healthRuntime) ContainerLogs(ctx context.Context, id string, opts dtma.LogOptions) (io.ReadCloser, error) {
	rc, err := r.rt.ContainerLogs(ctx, id, opts)
	return rc, r.note(err)
}

// Events implements dtma.Runtime.
func (r healthRuntime) Events(ctx context.Context) (<-chan dtma.ContainerEvent, <-chan error) {
	return r.rt.Events(ctx)
}

// Attach implements dtma.Runtime.
func (r healthRuntime) Attach(ctx context.Context, id string, stderr io.Writer) (io.ReadWriteCloser, error) {
	rw, err := r.rt.Attach(ctx, id, stderr)
	return rw, r.note(err)
}
