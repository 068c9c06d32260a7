package docker

import (
	"context"
	"io"
	"strconv"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// ContainerLogs returns the container's stdout and stderr interleaved as
// plain text, one line per log line: Docker's stream framing is removed
// (containers with a TTY are not framed and are passed through). opts.Tail
// > 0 keeps only the last Tail lines; opts.Follow keeps the reader open for
// new output until ctx ends, when the reader reports io.EOF. The caller must
// Close the reader. ENOTFOUND when the container does not exist.
func (r *Runtime) ContainerLogs(ctx context.Context, id string, opts dtma.LogOptions) (io.ReadCloser, error) {
	ins, err := r.client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, r.wrap(err, "logs of container %s", id)
	}
	tty := ins.Container.Config != nil && ins.Container.Config.Tty

	tail := "all"
	if opts.Tail > 0 {
		tail = strconv.Itoa(opts.Tail)
	}
	// The client closes body when ctx ends, which ends the copy below.
	body, err := r.client.ContainerLogs(ctx, id, client.ContainerLogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     opts.Follow,
		Tail:       tail,
	})
	if err != nil {
		return nil, r.wrap(err, "logs of container %s", id)
	}

	pr, pw := io.Pipe()
	go func() {
		var err error
		if tty {
			_, err = io.Copy(pw, body)
		} else {
			_, err = stdcopy.StdCopy(pw, pw, body)
		}
		body.Close()
		if ctx.Err() != nil {
			err = nil // the caller ended the stream: a normal end
		}
		if err != nil {
			err = r.wrap(err, "read logs of container %s", id)
		}
		pw.CloseWithError(err) // nil means io.EOF
	}()
	return &logReader{PipeReader: pr, body: body}, nil
}

// logReader is the plain-text side of a demultiplexed log stream. Closing it
// also closes the Docker response, which stops the copying goroutine.
type logReader struct {
	*io.PipeReader
	body io.Closer
}

// Close stops the stream.
func (l *logReader) Close() error {
	l.body.Close()
	return l.PipeReader.Close()
}
