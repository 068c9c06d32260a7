package metrics

import (
	"context"
	"io"
	"time"

	"github.com/agentopia/dtma"
)

// Runtime decorates a dtma.Runtime with Docker API latency and error
// series by operation. It adds no behaviour: every call goes to the
// wrapped runtime with its arguments and returns its results.
type Runtime struct {
	dtma.Runtime
	m *Metrics
}

// WrapRuntime returns rt with its calls measured in m.
func (m *Metrics) WrapRuntime(rt dtma.Runtime) *Runtime { return &Runtime{Runtime: rt, m: m} }

func (r *Runtime) done(op string, start time.Time, err error) {
	r.m.dockerDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		r.m.dockerErrors.WithLabelValues(op, dtma.ErrorCode(err)).Inc()
	}
}

func (r *Runtime) Ping(ctx context.Context) error {
	start := time.Now()
	err := r.Runtime.Ping(ctx)
	r.done("ping", start, err)
	return err
}

// Events counts a subscription (its latency is the call's, not the
// stream's); an error on the returned error channel is the stream's end
// and is counted by the caller as a reconnect.
func (r *Runtime) Events(ctx context.Context) (<-chan dtma.ContainerEvent, <-chan error) {
	start := time.Now()
	ev, errc := r.Runtime.Events(ctx)
	r.done("events", start, nil)
	return ev, errc
}

func (r *Runtime) EnsureImage(ctx context.Context, image string, policy dtma.PullPolicy) (string, error) {
	start := time.Now()
	w, err := r.Runtime.EnsureImage(ctx, image, policy)
	r.done("image", start, err)
	return w, err
}

func (r *Runtime) CreateContainer(ctx context.Context, cfg dtma.ContainerConfig) (string, error) {
	start := time.Now()
	id, err := r.Runtime.CreateContainer(ctx, cfg)
	r.done("create", start, err)
	return id, err
}

func (r *Runtime) StartContainer(ctx context.Context, id string) (bool, error) {
	start := time.Now()
	already, err := r.Runtime.StartContainer(ctx, id)
	r.done("start", start, err)
	return already, err
}

func (r *Runtime) StopContainer(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	start := time.Now()
	already, err := r.Runtime.StopContainer(ctx, id, timeout)
	r.done("stop", start, err)
	return already, err
}

func (r *Runtime) RestartContainer(ctx context.Context, id string, timeout time.Duration) error {
	start := time.Now()
	err := r.Runtime.RestartContainer(ctx, id, timeout)
	r.done("restart", start, err)
	return err
}

func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	start := time.Now()
	err := r.Runtime.RemoveContainer(ctx, id)
	r.done("remove", start, err)
	return err
}

// InspectContainer counts a not-found answer as an error of code
// not_found: it is how callers learn a container is gone.
func (r *Runtime) InspectContainer(ctx context.Context, idOrName string) (*dtma.Container, error) {
	start := time.Now()
	c, err := r.Runtime.InspectContainer(ctx, idOrName)
	r.done("inspect", start, err)
	return c, err
}

func (r *Runtime) ListContainers(ctx context.Context) ([]*dtma.Container, error) {
	start := time.Now()
	cs, err := r.Runtime.ListContainers(ctx)
	r.done("list", start, err)
	return cs, err
}

func (r *Runtime) ContainerLogs(ctx context.Context, id string, opts dtma.LogOptions) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := r.Runtime.ContainerLogs(ctx, id, opts)
	r.done("logs", start, err)
	return rc, err
}
