package docker_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
)

// countingProxy forwards the Engine API from a Unix socket of its own to
// the machine's daemon and counts container list requests filtered by
// network (the shard count's call).
type countingProxy struct {
	mu     sync.Mutex
	counts int
}

func (p *countingProxy) networkLists() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// startCountingProxy serves the proxy on a socket in a temporary
// directory and returns its "unix://" address.
func startCountingProxy(t *testing.T) (*countingProxy, string) {
	t.Helper()
	target := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		target = strings.TrimPrefix(h, "unix://")
	} else if h != "" {
		t.Skipf("DOCKER_HOST %s is not a unix socket: the counting proxy forwards to one", h)
	}
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "docker"})
	rp.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", target)
	}}
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/containers/json") && strings.Contains(r.URL.Query().Get("filters"), `"network"`) {
			p.mu.Lock()
			p.counts++
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p, "unix://" + sock
}

// TestShardCountsKept: a deploy on a shard with room asks Docker for no
// count (the counts are kept in the process); a container removed behind
// the agent's back makes room that the next pick finds by counting again
// before it would take the shard as full, so no shard is created that is
// not needed; and shards never hold more than the shard size.
func TestShardCountsKept(t *testing.T) {
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	testValue := dockertest.RunID() + "-counts"
	dockertest.Cleanup(t, c, dockertest.TestLabel+"="+testValue)
	host := "test-" + dockertest.RunID() + "-counts"
	proxy, addr := startCountingProxy(t)
	rt, err := docker.New(docker.Options{Host: addr, HostID: host, ExtraLabels: map[string]string{dockertest.TestLabel: testValue},
		NetworkShardSize: 3, NetworkSubnets: "10.214.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := context.Background()
	create := func(i int) string {
		t.Helper()
		name := "dtma-test-" + testValue + "-" + strconv.Itoa(i)
		id, err := rt.CreateContainer(ctx, dtma.ContainerConfig{Name: name, Image: image,
			Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, dtma.LabelInstance: name}})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		return id
	}
	networks := func() map[string]int {
		t.Helper()
		nets, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+host)})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, n := range nets.Items {
			list, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("network", n.ID)})
			if err != nil {
				t.Fatal(err)
			}
			out[n.Name] = len(list.Items)
		}
		return out
	}

	ids := []string{create(0)} // creates shard 0 (nothing to count yet)
	before := proxy.networkLists()
	ids = append(ids, create(1), create(2))
	if n := proxy.networkLists() - before; n != 0 {
		t.Errorf("two deploys on a shard with room counted its containers %d times, want 0", n)
	}
	// Behind the agent's back: one of shard 0's containers goes.
	if _, err := c.ContainerRemove(ctx, ids[1], client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	before = proxy.networkLists()
	create(3)
	if n := proxy.networkLists() - before; n == 0 {
		t.Errorf("a shard full as far as the process knew was taken without counting it again")
	}
	if got := networks(); len(got) != 1 || got[docker.NetworkName(host, 0)] != 3 {
		t.Errorf("after a removal behind the agent's back, networks %v: want shard 0 alone, holding 3", got)
	}
	// Now full for real: the next create opens shard 1.
	create(4)
	if got := networks(); len(got) != 2 || got[docker.NetworkName(host, 0)] != 3 || got[docker.NetworkName(host, 1)] != 1 {
		t.Errorf("networks %v: want shard 0 holding 3 and shard 1 holding 1", got)
	}
}
