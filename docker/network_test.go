package docker_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
)

// TestIsolatedCreate: in isolated mode a container is created with every
// capability dropped but the ones asked for, its limits, and on a DTMA
// network of its host (labelled, inter-container traffic off, a subnet of
// the pool); networks are shards of at most the shard size, counted with
// containers that never started and creates running concurrently, and a
// new Runtime (an agent restart) finds them again instead of making more.
func TestIsolatedCreate(t *testing.T) {
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	label := dockertest.TestLabel + "=" + dockertest.RunID() + "-isolated"
	dockertest.Cleanup(t, c, label)
	host := "test-" + dockertest.RunID() + "-isolated"
	newRT := func() *docker.Runtime {
		rt, err := docker.New(docker.Options{
			DefaultHostIP:    "127.0.0.1",
			ExtraLabels:      map[string]string{dockertest.TestLabel: dockertest.RunID() + "-isolated"},
			NetworkShardSize: 2,
			NetworkSubnets:   "10.213.0.0/16",
		})
		if err != nil {
			t.Fatalf("docker.New: %v", err)
		}
		t.Cleanup(func() { rt.Close() })
		return rt
	}
	create := func(rt *docker.Runtime, i int) (string, error) {
		name := "dtma-test-" + dockertest.RunID() + "-isolated-" + strconv.Itoa(i)
		return rt.CreateContainer(context.Background(), dtma.ContainerConfig{
			Name:   name,
			Image:  image,
			Ports:  []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}},
			Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, dtma.LabelInstance: name},
			Limits: dtma.Limits{Memory: 64 << 20, PIDs: 32, MilliCPUs: 500},
			CapAdd: []string{"CHOWN", "SETUID"},
		})
	}
	rt := newRT()
	var wg sync.WaitGroup
	ids := make([]string, 3)
	errs := make([]error, 3)
	for i := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); ids[i], errs[i] = create(rt, i) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}

	ctx := context.Background()
	res, err := c.ContainerInspect(ctx, ids[0], client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := res.Container.HostConfig
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Equal(capNames(hc.CapAdd), []string{"CHOWN", "SETUID"}) {
		t.Errorf("CapDrop %v, CapAdd %v; want [ALL], [CHOWN SETUID]", hc.CapDrop, hc.CapAdd)
	}
	if hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.PidsLimit == nil || *hc.PidsLimit != 32 || hc.NanoCPUs != 5e8 {
		t.Errorf("limits: memory %d swap %d pids %v nanocpus %d", hc.Memory, hc.MemorySwap, hc.PidsLimit, hc.NanoCPUs)
	}

	shards := func() map[string]int { // network name -> containers on it
		t.Helper()
		nets, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+host)})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, n := range nets.Items {
			if n.Options["com.docker.network.bridge.enable_icc"] != "false" || n.Labels[dtma.LabelManaged] != "true" ||
				n.Labels[dockertest.TestLabel] != dockertest.RunID()+"-isolated" || len(n.IPAM.Config) != 1 ||
				n.IPAM.Config[0].Subnet.Bits() != 29 || !n.IPAM.Config[0].Subnet.Addr().Is4() ||
				n.IPAM.Config[0].Subnet.Addr().As4()[0] != 10 || n.IPAM.Config[0].Subnet.Addr().As4()[1] != 213 {
				t.Errorf("network %s: options %v labels %v ipam %+v; want icc off, DTMA's and the test's labels, a /29 of 10.213.0.0/16", n.Name, n.Options, n.Labels, n.IPAM.Config)
			}
			list, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("network", n.Name)})
			if err != nil {
				t.Fatal(err)
			}
			out[n.Name] = len(list.Items)
		}
		return out
	}
	got := shards()
	want := map[string]int{docker.NetworkName(host, 0): 2, docker.NetworkName(host, 1): 1}
	if len(got) != 2 || got[docker.NetworkName(host, 0)] != 2 || got[docker.NetworkName(host, 1)] != 1 {
		t.Fatalf("networks %v, want %v", got, want)
	}
	if n, err := c.NetworkInspect(ctx, string(hc.NetworkMode), client.NetworkInspectOptions{}); err != nil || got[n.Network.Name] == 0 {
		t.Errorf("container's network mode %q is not one of the host's networks %v (%v)", hc.NetworkMode, got, err)
	}

	// A new runtime (the agent restarted) fills shard 1, then makes shard 2.
	rt2 := newRT()
	for i := 3; i < 5; i++ {
		if _, err := create(rt2, i); err != nil {
			t.Fatalf("create %d after restart: %v", i, err)
		}
	}
	got = shards()
	if len(got) != 3 || got[docker.NetworkName(host, 0)] != 2 || got[docker.NetworkName(host, 1)] != 2 || got[docker.NetworkName(host, 2)] != 1 {
		t.Fatalf("after a restart and two creates: networks %v, want shards 0 and 1 full and shard 2 with one", got)
	}
}

// TestBridgeMode: NetworkBridge keeps containers on Docker's default bridge
// (and still drops capabilities).
func TestBridgeMode(t *testing.T) {
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	dockertest.Cleanup(t, c, dockertest.TestLabel+"="+dockertest.RunID()+"-bridge")
	rt, err := docker.New(docker.Options{ExtraLabels: map[string]string{dockertest.TestLabel: dockertest.RunID() + "-bridge"}, Network: docker.NetworkBridge})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	host := "test-" + dockertest.RunID() + "-bridge"
	id, err := rt.CreateContainer(context.Background(), dtma.ContainerConfig{
		Name: "dtma-test-" + dockertest.RunID() + "-bridge", Image: image,
		Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hc := res.Container.HostConfig; (hc.NetworkMode != "default" && hc.NetworkMode != "bridge") || !slices.Equal(hc.CapDrop, []string{"ALL"}) || hc.Memory != 0 {
		t.Errorf("network mode %q, CapDrop %v, memory %d; want Docker's default bridge, [ALL], no limit", hc.NetworkMode, hc.CapDrop, hc.Memory)
	}
	nets, err := c.NetworkList(context.Background(), client.NetworkListOptions{Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+host)})
	if err != nil || len(nets.Items) != 0 {
		t.Errorf("bridge mode made networks %v (err %v)", nets.Items, err)
	}
}

// capNames strips the "CAP_" Docker puts before capability names.
func capNames(caps []string) []string {
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = strings.TrimPrefix(c, "CAP_")
	}
	return out
}

// TestIsolatedDuplicateShard: a shard whose network exists twice under one
// name (the daemon finished a create for an agent killed meanwhile, and
// the restarted agent made its own) never makes a container unstartable:
// containers name their network by id.
func TestIsolatedDuplicateShard(t *testing.T) {
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	testValue := dockertest.RunID() + "-dup"
	dockertest.Cleanup(t, c, dockertest.TestLabel+"="+testValue)
	host := "test-" + dockertest.RunID() + "-dup"
	rt, err := docker.New(docker.Options{ExtraLabels: map[string]string{dockertest.TestLabel: testValue}, NetworkShardSize: 2, NetworkSubnets: "10.213.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := context.Background()
	run := func(i int) {
		t.Helper()
		name := "dtma-test-" + testValue + "-" + strconv.Itoa(i)
		id, err := rt.CreateContainer(ctx, dtma.ContainerConfig{Name: name, Image: image,
			Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, dtma.LabelInstance: name}})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if _, err := rt.StartContainer(ctx, id); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	run(0)
	// The twin of shard 0: same name, same labels.
	if _, err := c.NetworkCreate(ctx, docker.NetworkName(host, 0), client.NetworkCreateOptions{Driver: "bridge",
		Options: map[string]string{"com.docker.network.bridge.enable_icc": "false"},
		Labels:  map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, docker.LabelNetworkShard: "0", dockertest.TestLabel: testValue}}); err != nil {
		t.Fatalf("create the twin network: %v", err)
	}
	for i := 1; i < 5; i++ {
		run(i)
	}
	nets, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+host)})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range nets.Items {
		list, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("network", n.ID)})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 2 {
			t.Errorf("network %s (%s) holds %d containers, shard size 2", n.Name, n.ID[:12], len(list.Items))
		}
		total += len(list.Items)
	}
	if total != 5 {
		t.Errorf("%d containers on the host's %d networks, want 5", total, len(nets.Items))
	}
}

// TestNetworkPrune: removing a container removes the host's extra network
// shards left empty (never shard 0, never another host's network), and a
// container still running keeps its network and its published port.
func TestNetworkPrune(t *testing.T) {
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	testValue := dockertest.RunID() + "-prune"
	dockertest.Cleanup(t, c, dockertest.TestLabel+"="+testValue)
	host := "test-" + dockertest.RunID() + "-prune"
	ctx := context.Background()
	rt, err := docker.New(docker.Options{
		HostID:           host,
		DefaultHostIP:    "127.0.0.1",
		ExtraLabels:      map[string]string{dockertest.TestLabel: testValue},
		NetworkShardSize: 1,
		NetworkSubnets:   "10.213.0.0/16",
	})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	// Another host's empty shard 1: never ours to remove.
	other := host + "-other"
	if _, err := c.NetworkCreate(ctx, docker.NetworkName(other, 1), client.NetworkCreateOptions{Driver: "bridge",
		Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: other, docker.LabelNetworkShard: "1", dockertest.TestLabel: testValue}}); err != nil {
		t.Fatalf("create another host's network: %v", err)
	}
	ids := make([]string, 3)
	for i := range ids {
		name := "dtma-test-" + testValue + "-" + strconv.Itoa(i)
		ids[i], err = rt.CreateContainer(ctx, dtma.ContainerConfig{Name: name, Image: image,
			Ports:  []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}},
			Labels: map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: host, dtma.LabelInstance: name}})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if _, err := rt.StartContainer(ctx, ids[i]); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	networks := func(h string) []string {
		t.Helper()
		nets, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+h)})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range nets.Items {
			out = append(out, n.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := networks(host); len(got) != 3 {
		t.Fatalf("networks %v, want three shards of one", got)
	}
	for _, i := range []int{2, 1} {
		if err := rt.RemoveContainer(ctx, ids[i]); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if got, want := networks(host), []string{docker.NetworkName(host, 0)}; !slices.Equal(got, want) {
		t.Errorf("after removing the containers of shards 1 and 2: networks %v, want %v", got, want)
	}
	if got := networks(other); len(got) != 1 {
		t.Errorf("another host's empty network was removed: %v", got)
	}
	in, err := c.ContainerInspect(ctx, ids[0], client.ContainerInspectOptions{})
	if err != nil || !in.Container.State.Running {
		t.Fatalf("container 0 after the prune: %v", err)
	}
	var hostPort string
	for _, bs := range in.Container.NetworkSettings.Ports {
		for _, b := range bs {
			hostPort = b.HostPort
		}
	}
	if hostPort == "" {
		t.Fatalf("container 0 publishes no port after the prune: %v", in.Container.NetworkSettings.Ports)
	}
	httpGet(t, "http://127.0.0.1:"+hostPort+"/") // fails the test unless it answers 200
}
