package docker

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/client"
)

// DaemonInfo is what `dtma doctor` reads from the daemon.
type DaemonInfo struct {
	ServerVersion string
	SystemTime    time.Time // the daemon's clock when it answered
}

// Info returns the daemon's version and clock. EUNAVAILABLE when the
// daemon does not answer; an error naming the field when its clock does
// not parse.
func (r *Runtime) Info(ctx context.Context) (DaemonInfo, error) {
	res, err := r.client.Info(ctx, client.InfoOptions{})
	if err != nil {
		return DaemonInfo{}, r.wrap(err, "docker info")
	}
	t, err := time.Parse(time.RFC3339Nano, res.Info.SystemTime)
	if err != nil {
		return DaemonInfo{}, fmt.Errorf("docker info: SystemTime %q: %w", res.Info.SystemTime, err)
	}
	return DaemonInfo{ServerVersion: res.Info.ServerVersion, SystemTime: t}, nil
}
