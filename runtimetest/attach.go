package runtimetest

import (
	"context"
	"io"

	"github.com/agentopia/dtma"
)

// Attach is the method name of Runtime.Attach in calls and injections.
const Attach = "Attach"

// SetAttach makes Attach answer a running container with fn's stream (a
// test's in-process MCP server, say). Without it Attach is ECONFLICT, as
// Docker's for a container that was not created for stdio.
func (r *Runtime) SetAttach(fn func(c *dtma.Container) (io.ReadWriteCloser, error)) {
	r.mu.Lock()
	r.attach = fn
	r.mu.Unlock()
}

// Attach implements dtma.Runtime: ENOTFOUND for a missing container,
// ECONFLICT for one not running (or when no SetAttach stream is set),
// else SetAttach's stream. stderr is not used.
func (r *Runtime) Attach(ctx context.Context, id string, stderr io.Writer) (io.ReadWriteCloser, error) {
	if err := r.enter(ctx, Attach, id); err != nil {
		return nil, err
	}
	defer r.leave(Attach, id)
	r.mu.Lock()
	c, fn := r.byRefLocked(id), r.attach
	var cc dtma.Container
	if c != nil {
		cc = *c
	}
	r.mu.Unlock()
	switch {
	case c == nil:
		return nil, dtma.Errorf(dtma.ENOTFOUND, "no such container: %s", id)
	case cc.State != dtma.DockerRunning:
		return nil, dtma.Errorf(dtma.ECONFLICT, "container %s is not running", id)
	case fn == nil:
		return nil, dtma.Errorf(dtma.ECONFLICT, "container %s was not created for stdio", id)
	}
	return fn(&cc)
}
