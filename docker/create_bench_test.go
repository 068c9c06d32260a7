package docker_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
)

// BenchmarkCreate measures CreateContainer on Docker's default bridge and
// on an isolated network (one network list and one count per create).
func BenchmarkCreate(b *testing.B) {
	c := dockertest.Client(b)
	image := dockertest.EchoImage(b)
	for _, mode := range []string{docker.NetworkBridge, docker.NetworkIsolated} {
		b.Run(mode, func(b *testing.B) {
			value := dockertest.RunID() + "-bench-" + mode
			dockertest.Cleanup(b, c, dockertest.TestLabel+"="+value)
			rt, err := docker.New(docker.Options{ExtraLabels: map[string]string{dockertest.TestLabel: value}, Network: mode, NetworkSubnets: "10.213.0.0/16"})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			host := "bench-" + value
			for i := 0; i < b.N; i++ {
				name := "dtma-" + value + "-" + strconv.Itoa(i)
				if _, err := rt.CreateContainer(context.Background(), dtma.ContainerConfig{Name: name, Image: image,
					Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
