package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/agentopia/dtma/internal/dockertest"
)

// Tools limited and isolated (issue 14, item 5): container inspection of
// what the agent creates, and what one tool can reach of another.

// defaultCaps are the capabilities a tool keeps by default, as Docker
// reports them.
var defaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID"}

// confinement is what a test checks of a tool container.
type confinement struct {
	memory, pids, nanoCPUs int64
	caps                   []string
}

// checkConfinement fails the test unless container id has exactly these
// limits (memory swap equal to memory: no swap on top) and capabilities,
// all others dropped, no-new-privileges, and sits on one of the agent's
// DTMA networks with inter-container traffic off. It returns that
// network's name and the container's address on it.
func checkConfinement(t *testing.T, a *Agent, id string, want confinement) (network, ip string) {
	t.Helper()
	ins := a.Inspect(id)
	if ins == nil {
		t.Fatalf("container %s is gone", id)
	}
	hc := ins.Container.HostConfig
	pids := int64(0)
	if hc.PidsLimit != nil {
		pids = *hc.PidsLimit
	}
	if hc.Memory != want.memory || hc.MemorySwap != want.memory || pids != want.pids || hc.NanoCPUs != want.nanoCPUs {
		t.Errorf("container %s limits: memory %d swap %d pids %d nanocpus %d; want memory=swap=%d pids %d nanocpus %d",
			id, hc.Memory, hc.MemorySwap, pids, hc.NanoCPUs, want.memory, want.pids, want.nanoCPUs)
	}
	caps := slices.Clone(hc.CapAdd)
	slices.Sort(caps)
	wantCaps := slices.Clone(want.caps)
	slices.Sort(wantCaps)
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Equal(caps, wantCaps) {
		t.Errorf("container %s: CapDrop %v CapAdd %v; want [ALL] and %v", id, hc.CapDrop, hc.CapAdd, wantCaps)
	}
	if slices.Contains(caps, "CAP_NET_RAW") && !slices.Contains(wantCaps, "CAP_NET_RAW") {
		t.Errorf("container %s keeps NET_RAW", id)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") || hc.Privileged {
		t.Errorf("container %s: SecurityOpt %v privileged %v", id, hc.SecurityOpt, hc.Privileged)
	}
	network = string(hc.NetworkMode)
	res, err := a.Docker.NetworkInspect(context.Background(), network, client.NetworkInspectOptions{})
	if err != nil {
		t.Errorf("container %s: network mode %q is no DTMA network: %v", id, network, err)
	} else if n := res.Network; n.Labels["dtma.managed"] != "true" || n.Labels["dtma.host"] != a.HostID || n.Labels[dockertest.TestLabel] != dockertest.RunID() ||
		n.Options["com.docker.network.bridge.enable_icc"] != "false" || n.Driver != "bridge" {
		t.Errorf("container %s is on network %s with driver %s, labels %v, options %v; want a DTMA bridge of host %s with icc off",
			id, network, n.Driver, n.Labels, n.Options, a.HostID)
	}
	for _, ep := range ins.Container.NetworkSettings.Networks { // one network
		if ep != nil && ep.IPAddress.IsValid() {
			ip = ep.IPAddress.String()
		}
	}
	return network, ip
}

// dialFrom asks the echo tool published on port to open a TCP connection
// to addr from inside its container: "ok" or "fail: <reason>".
func dialFrom(t *testing.T, port int, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/dial?addr=" + addr)
	if err != nil {
		t.Fatalf("ask the tool on %d to dial %s: %v", port, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// hostNetworks returns the names of the networks labelled for the agent's
// host.
func hostNetworks(t *testing.T, a *Agent) []string {
	t.Helper()
	res, err := a.Docker.NetworkList(context.Background(), client.NetworkListOptions{
		Filters: make(client.Filters).Add("label", "dtma.host="+a.HostID),
	})
	if err != nil {
		t.Fatalf("list networks: %v", err)
	}
	var names []string
	for _, n := range res.Items {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// v1Tool deploys an echo tool through v1 (host port allocated) and returns
// the instance JSON, its container id and published port.
func v1Tool(t *testing.T, a *Agent, img, name string, extra map[string]any) (map[string]any, string, int) {
	t.Helper()
	body := map[string]any{"name": name, "image": img, "env": map[string]string{"ECHO": "echo-" + name},
		"ports": []map[string]any{{"container_port": 8080}}}
	for k, v := range extra {
		body[k] = v
	}
	inst := a.Expect(201, "POST", "/v1/instances", body).JSON(t)
	port, _ := jget(inst, "ports.0.host_port").(float64)
	return inst, str(inst["container_id"]), int(port)
}

// TestIsolationLimitsCapsNetwork: a legacy deploy gets the host's default
// limits, a v1 deploy its own; both drop every capability but the minimal
// set (no NET_RAW), sit on the host's DTMA network with inter-container
// traffic off, and still serve on their published ports; a re-deploy with other limits is a conflict; a container removed
// behind the agent is recreated just as confined; after an agent restart
// the next tool joins the same network.
func TestIsolationLimitsCapsNetwork(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	suffix := uniqueSuffix()

	// Tool A through the legacy face: the host defaults.
	nameA := "Iso Legacy " + suffix
	r := a.Expect(201, "POST", "/tools", legacyBody(img, nameA, "", []string{"ECHO=a-" + suffix},
		map[string]any{"8080/tcp": []map[string]string{{"HostPort": "0"}}}))
	body := r.JSON(t)
	cidA := str(jget(body, "data.container_id"))
	pubA, _ := jget(body, "data.ports.0.public_port").(float64)
	netA, ipA := checkConfinement(t, a, cidA, confinement{memory: 512 << 20, pids: 256, nanoCPUs: 1e9, caps: defaultCaps})

	// Tool B through v1 with its own limits.
	nameB := "Iso V1 " + suffix
	limits := map[string]any{"memory": "256m", "pids": 128, "cpus": 0.5}
	inst, cidB, pubB := v1Tool(t, a, img, nameB, map[string]any{"limits": limits})
	if jget(inst, "limits.memory") != float64(256<<20) || jget(inst, "limits.pids") != float64(128) || jget(inst, "limits.cpus") != 0.5 {
		t.Errorf("v1 instance limits = %v, want memory 268435456, pids 128, cpus 0.5", inst["limits"])
	}
	netB, ipB := checkConfinement(t, a, cidB, confinement{memory: 256 << 20, pids: 128, nanoCPUs: 5e8, caps: defaultCaps})
	if netA != netB || ipA == "" || ipB == "" {
		t.Fatalf("tools on networks %q (%s) and %q (%s); want one DTMA network, both with an address", netA, ipA, netB, ipB)
	}

	// Published ports still serve.
	if !Serves(int(pubA), "/", "a-"+suffix) || !Serves(pubB, "/", "echo-"+nameB) {
		t.Fatalf("published ports %v and %d do not serve", pubA, pubB)
	}
	// Limits are part of the spec: the same is idempotent, other limits conflict.
	base := map[string]any{"name": nameB, "image": img, "env": map[string]string{"ECHO": "echo-" + nameB},
		"ports": []map[string]any{{"container_port": 8080}}, "limits": limits}
	a.Expect(200, "POST", "/v1/instances", base)
	base["limits"] = map[string]any{"memory": "300m", "pids": 128, "cpus": 0.5}
	if r := a.Expect(409, "POST", "/v1/instances", base); !strings.Contains(string(r.Body), "limits") {
		t.Errorf("conflicting re-deploy does not name limits: %s", r.Body)
	}

	// Removed behind the agent: recreated with the same confinement.
	if _, err := a.Docker.ContainerRemove(context.Background(), cidB, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatalf("docker rm -f: %v", err)
	}
	var newB string
	Eventually(t, 90*time.Second, "tool B recreated and running", func() bool {
		got := a.Do("GET", "/v1/instances/"+url.PathEscape(nameB), nil).JSON(t)
		newB = str(got["container_id"])
		return newB != "" && newB != cidB && got["docker_status"] == "running"
	})
	if net, _ := checkConfinement(t, a, newB, confinement{memory: 256 << 20, pids: 128, nanoCPUs: 5e8, caps: defaultCaps}); net != netA {
		t.Errorf("recreated tool on network %s, want %s", net, netA)
	}

	// After a restart the agent finds its network again: no second one.
	a.Restart()
	_, cidC, _ := v1Tool(t, a, img, "Iso After Restart "+suffix, nil)
	if net, _ := checkConfinement(t, a, cidC, confinement{memory: 512 << 20, pids: 256, nanoCPUs: 1e9, caps: defaultCaps}); net != netA {
		t.Errorf("tool deployed after a restart on network %s, want %s", net, netA)
	}
	if nets := hostNetworks(t, a); len(nets) != 1 {
		t.Errorf("host networks %v, want exactly one", nets)
	}
}

// TestIsolationToolsCannotReachEachOther: two tools of one host, each
// serving on its published port, cannot open a connection to each other's
// container port over the network they share, while each can to its own
// (the dial itself works).
func TestIsolationToolsCannotReachEachOther(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	suffix := uniqueSuffix()
	nameA, nameB := "Iso Reach A "+suffix, "Iso Reach B "+suffix
	_, cidA, pubA := v1Tool(t, a, img, nameA, nil)
	_, cidB, pubB := v1Tool(t, a, img, nameB, nil)
	if !Serves(pubA, "/", "echo-"+nameA) || !Serves(pubB, "/", "echo-"+nameB) {
		t.Fatalf("published ports %d and %d do not serve", pubA, pubB)
	}
	ip := func(id string) string {
		for _, ep := range a.Inspect(id).Container.NetworkSettings.Networks {
			if ep != nil && ep.IPAddress.IsValid() {
				return ep.IPAddress.String()
			}
		}
		t.Fatalf("container %s has no address", id)
		return ""
	}
	ipA, ipB := ip(cidA), ip(cidB)
	if own := dialFrom(t, pubA, url.QueryEscape(ipA+":8080")); own != "ok" {
		t.Fatalf("tool A cannot dial its own port %s:8080: %q", ipA, own)
	}
	other := dialFrom(t, pubA, url.QueryEscape(ipB+":8080"))
	t.Logf("tool A dialling tool B's container port: %q", other)
	if !strings.HasPrefix(other, "fail") {
		t.Errorf("tool A reached tool B's container port %s:8080: %q", ipB, other)
	}
	if back := dialFrom(t, pubB, url.QueryEscape(ipA+":8080")); !strings.HasPrefix(back, "fail") {
		t.Errorf("tool B reached tool A's container port %s:8080: %q", ipA, back)
	}
	// Still served from the host after the attempts.
	if !Serves(pubA, "/", "echo-"+nameA) || !Serves(pubB, "/", "echo-"+nameB) {
		t.Errorf("published ports %d and %d stopped serving", pubA, pubB)
	}
}

// TestIsolationLimitsValidation: bad or excessive v1 limits are a 400
// naming the field, and nothing is created.
func TestIsolationLimitsValidation(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	name := "Iso Bad " + uniqueSuffix()
	for _, tc := range []struct {
		limits any
		field  string
	}{
		{map[string]any{"memory": "lots"}, "limits.memory"},
		{map[string]any{"memory": "1m"}, "limits.memory"},
		{map[string]any{"memory": "8g"}, "limits.memory"}, // above the host's 4g ceiling
		{map[string]any{"memory": -5}, "limits.memory"},
		{map[string]any{"pids": 0}, "limits.pids"},
		{map[string]any{"pids": 5000}, "limits.pids"}, // above 4096
		{map[string]any{"pids": "many"}, "limits.pids"},
		{map[string]any{"cpus": -1}, "limits.cpus"},
		{map[string]any{"cpus": 0.0001}, "limits.cpus"},
		{map[string]any{"cpus": 64}, "limits.cpus"}, // above this machine's CPUs
		{map[string]any{"swap": "1g"}, "swap"},
		{"512m", "limits"},
	} {
		r := a.Do("POST", "/v1/instances", map[string]any{"name": name, "image": img, "limits": tc.limits})
		if r.Status != 400 || str(jget(r.JSON(t), "error.field")) != tc.field {
			t.Errorf("limits %v: %d %s; want 400 naming %s", tc.limits, r.Status, r.Body, tc.field)
		}
	}
	if got := a.Do("GET", "/v1/instances/"+url.PathEscape(name), nil); got.Status != 404 {
		t.Errorf("a rejected deploy left an instance: %d %s", got.Status, got.Body)
	}
	if ids := a.HostContainers(); len(ids) != 0 {
		t.Errorf("rejected deploys left containers %v", ids)
	}
}

// TestIsolationPolicyAndSettings: host defaults come from the settings; a
// policy rule for the image replaces them, adds capabilities and raises the
// ceiling on overrides for that image only.
func TestIsolationPolicyAndSettings(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	policy := filepath.Join(t.TempDir(), "policy.json")
	repo, _, _ := strings.Cut(img, ":")
	rule := fmt.Sprintf(`{"images": [{"pattern": "%s:*", "cap_add": ["net_bind_service"], "memory": "6g", "pids": 512}]}`, repo)
	if err := os.WriteFile(policy, []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_POLICY_FILE=" + policy, "DTMA_DEFAULT_CPUS=0.25", "DTMA_DEFAULT_MEMORY=300m"}})
	suffix := uniqueSuffix()
	caps := append(slices.Clone(defaultCaps), "CAP_NET_BIND_SERVICE")

	r := a.Expect(201, "POST", "/tools", legacyBody(img, "Iso Policy "+suffix, "", nil, nil))
	checkConfinement(t, a, str(jget(r.JSON(t), "data.container_id")), confinement{memory: 6 << 30, pids: 512, nanoCPUs: 25e7, caps: caps})

	// The rule raises the 4g ceiling to 6g for this image.
	_, cid, _ := v1Tool(t, a, img, "Iso Policy Big "+suffix, map[string]any{"limits": map[string]any{"memory": "5g"}})
	checkConfinement(t, a, cid, confinement{memory: 5 << 30, pids: 512, nanoCPUs: 25e7, caps: caps})
	bad := a.Do("POST", "/v1/instances", map[string]any{"name": "Iso Policy Huge " + suffix, "image": img, "limits": map[string]any{"memory": "7g"}})
	if bad.Status != 400 || str(jget(bad.JSON(t), "error.field")) != "limits.memory" {
		t.Errorf("7g above the policy's 6g: %d %s; want 400 naming limits.memory", bad.Status, bad.Body)
	}
}

// TestIsolationBridgeSetting: DTMA_NETWORK=bridge keeps tools on Docker's
// default bridge (for hosts where isolation cannot work) and makes no
// network; limits and capabilities still apply.
func TestIsolationBridgeSetting(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_NETWORK=bridge"}})
	name := "Iso Bridge " + uniqueSuffix()
	_, cid, port := v1Tool(t, a, img, name, nil)
	hc := a.Inspect(cid).Container.HostConfig
	if (hc.NetworkMode != "default" && hc.NetworkMode != "bridge") || hc.Memory != 512<<20 || !slices.Equal(hc.CapDrop, []string{"ALL"}) {
		t.Errorf("bridge mode: network %q memory %d CapDrop %v", hc.NetworkMode, hc.Memory, hc.CapDrop)
	}
	if nets := hostNetworks(t, a); len(nets) != 0 {
		t.Errorf("bridge mode made networks %v", nets)
	}
	if !Serves(port, "/", "echo-"+name) {
		t.Errorf("tool on the default bridge does not serve on %d", port)
	}
}

// TestIsolationSharding: with a shard size of 2, five tools deployed at once
// fill three networks of at most two containers each; after a restart the
// sixth fills the third network rather than making a fourth.
func TestIsolationSharding(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_NETWORK_SHARD_SIZE=2"}})
	suffix := uniqueSuffix()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.Do("POST", "/v1/instances", map[string]any{"name": "Iso Shard " + suffix + "-" + strconv.Itoa(i), "image": img})
			if r.Status != 201 {
				t.Errorf("deploy %d: %d %s", i, r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	counts := func() map[string]int {
		out := map[string]int{}
		for _, n := range hostNetworks(t, a) {
			list, err := a.Docker.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("network", n)})
			if err != nil {
				t.Fatal(err)
			}
			out[n] = len(list.Items)
		}
		return out
	}
	got := counts()
	total := 0
	for n, c := range got {
		total += c
		if c > 2 {
			t.Errorf("network %s holds %d containers, shard size 2", n, c)
		}
	}
	if len(got) != 3 || total != 5 {
		t.Fatalf("networks %v; want 3 holding the 5 tools", got)
	}
	a.Restart()
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "Iso Shard " + suffix + "-6", "image": img})
	got = counts()
	if len(got) != 3 {
		t.Errorf("after a restart and a sixth tool: networks %v, want the same 3, each full", got)
	}
	for n, c := range got {
		if c != 2 {
			t.Errorf("network %s holds %d containers, want 2", n, c)
		}
	}
}
