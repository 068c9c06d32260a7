package dockertest

import (
	"bytes"
	"context"
	"fmt"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// BuildImage builds the image tag from buildContext (a tar holding a
// Dockerfile) with the classic builder, labelled with this run's test
// label, and returns the first error the build reports. Nothing is pulled
// when the Dockerfile starts FROM scratch.
func BuildImage(ctx context.Context, c *client.Client, buildContext []byte, tag string) error {
	res, err := c.ImageBuild(ctx, bytes.NewReader(buildContext), client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Labels:      Labels(),
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	if err := drainBuildOutput(res.Body); err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	return nil
}

// BuildEchoImage is EchoImage for programs that are not tests (the bench
// command): it builds the echo binary and its FROM scratch image when no
// image with that tag exists and returns the tag, or the error of the
// build.
func BuildEchoImage(ctx context.Context, c *client.Client) (string, error) {
	return buildImage(ctx, c, "echo", EchoImageRepo)
}
