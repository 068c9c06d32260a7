package docker

import (
	"context"

	"github.com/moby/moby/client"
)

// ServerVersion returns the daemon's engine version and API version
// ("20.10.24", "1.41"). EUNAVAILABLE when the daemon does not answer.
func (r *Runtime) ServerVersion(ctx context.Context) (engine, api string, err error) {
	v, err := r.client.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", "", r.wrap(err, "docker version")
	}
	return v.Version, v.APIVersion, nil
}
