package docker

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// Attach attaches to the stdin, stdout and stderr of the running container
// id (created with cfg.Stdio: stdin open, no TTY) through the Engine API's
// hijacked attach connection. Reading the returned stream gives the
// container's stdout only, demultiplexed from Docker's stdcopy framing;
// stderr is copied to stderr (nil: discarded; it stays in the container's
// logs either way), so it never mixes into what is read. Writing sends to
// the container's stdin. Output written before the attach is not replayed.
//
// Read reports io.EOF when the container's output ends (it exited or was
// restarted; attach again once it runs), or the connection's error. Close
// (or the end of ctx) closes the connection; the container's stdin stays
// open (StdinOnce is false), so it can be attached to again at any time.
// ENOTFOUND when the container does not exist, ECONFLICT when it is not
// running or has a TTY, EUNAVAILABLE when the daemon cannot be reached.
func (r *Runtime) Attach(ctx context.Context, id string, stderr io.Writer) (io.ReadWriteCloser, error) {
	ins, err := r.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, r.wrap(err, "attach to container %s", id)
	}
	c := ins.Container
	if c.Config == nil || c.Config.Tty || !c.Config.OpenStdin {
		return nil, dtma.Errorf(dtma.ECONFLICT, "container %s was not created for stdio (it needs stdin open and no TTY)", id)
	}
	if c.State == nil || !c.State.Running {
		return nil, dtma.Errorf(dtma.ECONFLICT, "container %s is not running", id)
	}
	res, err := r.client.ContainerAttach(ctx, id, client.ContainerAttachOptions{
		Stream: true, Stdin: true, Stdout: true, Stderr: true,
	})
	if err != nil {
		return nil, r.wrap(err, "attach to container %s", id)
	}
	if stderr == nil {
		stderr = io.Discard
	}
	pr, pw := io.Pipe()
	a := &attached{conn: res.HijackedResponse, stdout: pr}
	go func() {
		_, err := stdcopy.StdCopy(pw, stderr, res.Reader)
		if err != nil {
			err = fmt.Errorf("attach to container %s: %w", id, err)
		}
		pw.CloseWithError(err) // nil: io.EOF
	}()
	context.AfterFunc(ctx, func() { a.Close() })
	return a, nil
}

// attached is an attach connection: reads come from the demultiplexed
// stdout, writes go to the connection (stdin).
type attached struct {
	conn   client.HijackedResponse
	stdout *io.PipeReader
	once   sync.Once
}

func (a *attached) Read(p []byte) (int, error)  { return a.stdout.Read(p) }
func (a *attached) Write(p []byte) (int, error) { return a.conn.Conn.Write(p) }

// Close closes the attach connection (never the container's stdin).
func (a *attached) Close() error {
	a.once.Do(func() {
		a.conn.Close()
		a.stdout.Close()
	})
	return nil
}
