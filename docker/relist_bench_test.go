package docker_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
)

// BenchmarkRelistCost measures what the reconciler asks of Docker per
// relist on a host with 100 containers: the one list call a quiet relist
// makes, and the list plus one inspect per container that a full relist
// (one in ten) makes. The containers are created, not started.
//
//	go test -run '^$' -bench RelistCost ./docker/
func BenchmarkRelistCost(b *testing.B) {
	const n = 100
	c := dockertest.Client(b)
	image := dockertest.EchoImage(b)
	dockertest.Cleanup(b, c, dockertest.TestLabel+"="+dockertest.RunID())
	host := "bench-" + dockertest.RunID()
	rt, err := docker.New(docker.Options{HostID: host, DefaultHostIP: "127.0.0.1", ExtraLabels: dockertest.Labels(), Network: docker.NetworkBridge})
	if err != nil {
		b.Fatalf("docker.New: %v", err)
	}
	defer rt.Close()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		name := host + "-" + strconv.Itoa(i)
		if _, err := rt.CreateContainer(ctx, dtma.ContainerConfig{Name: name, Image: image, Labels: rtLabels(host, name)}); err != nil {
			b.Fatalf("create %s: %v", name, err)
		}
	}

	b.Run("list", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			list, err := rt.ListContainers(ctx)
			if err != nil || len(list) != n {
				b.Fatalf("list: %d containers, %v", len(list), err)
			}
		}
	})
	b.Run("list+inspect-each", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			list, err := rt.ListContainers(ctx)
			if err != nil || len(list) != n {
				b.Fatalf("list: %d containers, %v", len(list), err)
			}
			for _, s := range list {
				if _, err := rt.InspectContainer(ctx, s.ID); err != nil {
					b.Fatalf("inspect %s: %v", s.ID, err)
				}
			}
		}
	})
}
