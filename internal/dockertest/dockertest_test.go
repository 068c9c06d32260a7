package dockertest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma/internal/dockertest"
)

func TestRunID(t *testing.T) {
	id := dockertest.RunID()
	if len(id) != 12 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("RunID() = %q, want 12 hex digits", id)
	}
	if again := dockertest.RunID(); again != id {
		t.Fatalf("RunID() changed within a process: %q then %q", id, again)
	}
}

// TestEchoImage runs the echo image and checks the server's documented
// behaviour: GET / echoes $ECHO_VAR's variable, GET /env/NAME echoes NAME.
func TestEchoImage(t *testing.T) {
	c := dockertest.Client(t)
	tag := dockertest.EchoImage(t)
	if !strings.HasPrefix(tag, dockertest.EchoImageRepo+":") || len(tag) != len(dockertest.EchoImageRepo)+1+12 {
		t.Fatalf("EchoImage() = %q, want %s:<12 hex>", tag, dockertest.EchoImageRepo)
	}
	if again := dockertest.EchoImage(t); again != tag {
		t.Fatalf("EchoImage() not idempotent: %q then %q", tag, again)
	}
	ctx := context.Background()
	img, err := c.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect %s: %v", tag, err)
	}
	if img.Config == nil || img.Config.Labels[dockertest.TestLabel] != "1" {
		t.Fatalf("image labels = %v, want %s=1", img.Config, dockertest.TestLabel)
	}

	label := dockertest.TestLabel + "=" + dockertest.RunID()
	dockertest.Cleanup(t, c, label)
	port := dockertest.FreePort(t)
	id := runEcho(t, c, tag, "dtma-dockertest-echo-"+dockertest.RunID(), dockertest.Labels(), port,
		[]string{"ECHO_VAR=GREETING", "GREETING=hello there", "OTHER=x y"})
	_ = id

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if got := get(t, base+"/"); got != "hello there" {
		t.Errorf("GET / = %q, want %q", got, "hello there")
	}
	if got := get(t, base+"/env/OTHER"); got != "x y" {
		t.Errorf("GET /env/OTHER = %q, want %q", got, "x y")
	}
}

// TestCleanup checks that Cleanup removes exactly the containers carrying
// its label and leaves a container with a different value alone.
func TestCleanup(t *testing.T) {
	c := dockertest.Client(t)
	tag := dockertest.EchoImage(t)
	ctx := context.Background()

	mine := dockertest.TestLabel + "=" + dockertest.RunID() + "-cleanup-mine"
	other := dockertest.TestLabel + "=" + dockertest.RunID() + "-cleanup-other"
	dockertest.Cleanup(t, c, other) // outer: removes the survivor at the end

	var mineID, otherID string
	t.Run("scoped", func(t *testing.T) {
		dockertest.Cleanup(t, c, mine)
		mineID = create(t, c, tag, mine)
		otherID = create(t, c, tag, other)
	})
	if _, err := c.ContainerInspect(ctx, mineID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("container labelled %s still there after cleanup (err %v)", mine, err)
	}
	if _, err := c.ContainerInspect(ctx, otherID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("container labelled %s was removed by the cleanup of %s: %v", other, mine, err)
	}
}

func create(t *testing.T, c *client.Client, image, label string) string {
	t.Helper()
	k, v, _ := strings.Cut(label, "=")
	res, err := c.ContainerCreate(context.Background(), client.ContainerCreateOptions{
		Config: &container.Config{Image: image, Labels: map[string]string{k: v}},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return res.ID
}

func runEcho(t *testing.T, c *client.Client, image, name string, labels map[string]string, hostPort int, env []string) string {
	t.Helper()
	ctx := context.Background()
	p := network.MustParsePort("8080/tcp")
	res, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        image,
			Env:          env,
			Labels:       labels,
			ExposedPorts: network.PortSet{p: {}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(hostPort)}}},
		},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if _, err := c.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return res.ID
}

// get polls url until the server answers (the container needs a moment to
// listen) and returns the body of the first 200 response.
func get(t *testing.T, url string) string {
	t.Helper()
	var lastErr error
	for range 100 {
		resp, err := http.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("status %d, read err %v", resp.StatusCode, rerr)
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}

// TestSweep: Sweep removes the containers and networks carrying exactly
// this run's label and leaves a container of another label value alone.
func TestSweep(t *testing.T) {
	c := dockertest.Client(t)
	tag := dockertest.EchoImage(t)
	ctx := context.Background()
	other := dockertest.TestLabel + "=" + dockertest.RunID() + "-sweep-other"
	dockertest.Cleanup(t, c, other)
	leftID := create(t, c, tag, dockertest.TestLabel+"="+dockertest.RunID())
	otherID := create(t, c, tag, other)
	net, err := c.NetworkCreate(ctx, "dtma-test-sweep-"+dockertest.RunID(), client.NetworkCreateOptions{Labels: dockertest.Labels()})
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	var said []string
	dockertest.Sweep(func(s string) (int, error) { said = append(said, s); return len(s), nil })
	if _, err := c.ContainerInspect(ctx, leftID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("this run's container survived the sweep (err %v)", err)
	}
	if _, err := c.NetworkInspect(ctx, net.ID, client.NetworkInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("this run's network survived the sweep (err %v)", err)
	}
	if _, err := c.ContainerInspect(ctx, otherID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("the sweep removed a container labelled %s: %v", other, err)
	}
	if len(said) != 1 || !strings.Contains(said[0], "removed 2") {
		t.Errorf("sweep said %q, want one line saying it removed 2", said)
	}
}
