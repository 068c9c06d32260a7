package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// repoFile reads a file of the repository (this file's directory is e2e/).
func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no source path")
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// prebuiltContext is the build context deploy/docker/Dockerfile.prebuilt
// expects: a static dtma binary, the host's CA certificates and an empty
// data directory.
func prebuiltContext(t *testing.T, binary string) []byte {
	t.Helper()
	bin, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Skipf("no host CA certificates: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, data []byte, typ byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: typ}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("Dockerfile", 0o644, repoFile(t, "deploy/docker/Dockerfile.prebuilt"), tar.TypeReg)
	add("dtma", 0o755, bin, tar.TypeReg)
	add("ca-certificates.crt", 0o644, certs, tar.TypeReg)
	add("data/", 0o755, nil, tar.TypeDir)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// managerFixture runs the agent's image as manager containers against the
// host daemon. Everything it makes carries this run's test label and is
// removed when the test ends.
type managerFixture struct {
	t       *testing.T
	dc      *client.Client
	run     string
	hostID  string
	apiPort int
	portLo  int
	sockGID uint32
	images  []string
	volume  string // named data volume ("" = the image's anonymous one)
}

func newManagerFixture(t *testing.T) *managerFixture {
	t.Helper()
	if os.Getenv("DTMA_E2E_RACE") == "1" {
		t.Skip("the race-detector binary is not static")
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" && h != "unix:///var/run/docker.sock" {
		t.Skipf("the agent container mounts /var/run/docker.sock; DOCKER_HOST is %s", h)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/docker.sock", &st); err != nil {
		t.Skipf("no Docker socket: %v", err)
	}
	m := &managerFixture{t: t, dc: dockertest.Client(t), run: dockertest.RunID(), sockGID: st.Gid,
		apiPort: freePort(t), portLo: 20000 + int(portBlock.Add(1)%300)*40}
	m.hostID = "e2e-img-" + m.run + "-" + strconv.Itoa(int(portBlock.Add(1)))
	t.Cleanup(m.cleanup)
	return m
}

func (m *managerFixture) cleanup() {
	removeContainers(m.dc, "label="+dockertest.TestLabel+"="+m.run, "label=dtma.host="+m.hostID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, _ := m.dc.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.
		Add("label", dockertest.TestLabel+"="+m.run).Add("label", "dtma.e2e-manager="+m.hostID)})
	for _, c := range list.Items {
		_, _ = m.dc.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
	_ = dockertest.RemoveNetworks(ctx, m.dc, dockertest.TestLabel+"="+m.run, "dtma.host="+m.hostID)
	if m.volume != "" {
		_, _ = m.dc.VolumeRemove(ctx, m.volume, client.VolumeRemoveOptions{Force: true})
	}
	for _, tag := range m.images {
		_, _ = m.dc.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true})
	}
}

// build builds the image from binary as tag (labelled with the test label).
func (m *managerFixture) build(binary, tag string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m.images = append(m.images, tag)
	if err := dockertest.BuildImage(ctx, m.dc, prebuiltContext(m.t, binary), tag); err != nil {
		m.t.Fatal(err)
	}
}

// useVolume gives every manager this fixture starts the same named data
// volume (labelled, removed at the end), as an upgrade does.
func (m *managerFixture) useVolume() {
	m.t.Helper()
	m.volume = "dtma-e2e-data-" + strings.ToLower(m.hostID)
	if _, err := m.dc.VolumeCreate(context.Background(), client.VolumeCreateOptions{Name: m.volume, Labels: dockertest.Labels()}); err != nil {
		m.t.Fatal(err)
	}
}

// start runs image as a manager container (non-root, the socket's group
// added, the API published on 127.0.0.1) and returns its id once it
// answers GET /health.
func (m *managerFixture) start(image string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := network.MustParsePort("30000/tcp")
	hc := &container.HostConfig{
		Binds:        []string{"/var/run/docker.sock:/var/run/docker.sock"},
		GroupAdd:     []string{strconv.Itoa(int(m.sockGID))},
		PortBindings: network.PortMap{p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(m.apiPort)}}},
	}
	if m.volume != "" {
		hc.Binds = append(hc.Binds, m.volume+":/var/lib/dtma")
	}
	res, err := m.dc.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "dtma_manager-" + strings.ToLower(m.hostID) + "-" + strconv.Itoa(int(portBlock.Add(1))),
		Config: &container.Config{
			Image: image,
			Env: []string{
				"DTMA_BEARER_TOKEN=" + Token,
				"DTMA_HOST_ID=" + m.hostID,
				"DTMA_DEFAULT_HOST_IP=127.0.0.1",
				"DTMA_CONTAINER_LABELS=" + dockertest.TestLabel + "=" + m.run,
				"DTMA_PORT_RANGE=" + strconv.Itoa(m.portLo) + "-" + strconv.Itoa(m.portLo+39),
				"DTMA_NETWORK_SUBNETS=" + NetworkSubnets,
			},
			Labels:       map[string]string{dockertest.TestLabel: m.run, "dtma.e2e-manager": m.hostID},
			ExposedPorts: network.PortSet{p: {}},
			// The image's test (dtma healthcheck), checked more often.
			Healthcheck: &container.HealthConfig{Interval: time.Second, Timeout: 5 * time.Second, Retries: 3},
		},
		HostConfig: hc,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.dc.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		m.t.Fatal(err)
	}
	Eventually(m.t, time.Minute, "the manager container answering /health", func() bool {
		ins, err := m.dc.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{})
		if err == nil && ins.Container.State != nil && !ins.Container.State.Running {
			m.t.Fatalf("the manager container stopped:\n%s", m.logs(res.ID))
		}
		resp, err := http.Get(m.url() + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return res.ID
}

func (m *managerFixture) url() string { return "http://127.0.0.1:" + strconv.Itoa(m.apiPort) }

func (m *managerFixture) client() *dtmahttp.Client { return dtmahttp.NewClient(m.url(), Token) }

func (m *managerFixture) logs(id string) string {
	rc, err := m.dc.ContainerLogs(context.Background(), id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(rc)
	return b.String()
}

// stop stops the manager container (SIGTERM: the agent leaves its tools
// running) and removes it, keeping the named volume.
func (m *managerFixture) stop(id string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.dc.ContainerStop(ctx, id, client.ContainerStopOptions{}); err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.dc.ContainerRemove(ctx, id, client.ContainerRemoveOptions{}); err != nil {
		m.t.Fatal(err)
	}
}

// TestImageRunsAsManagerContainer builds the agent's image FROM scratch
// (deploy/docker/Dockerfile.prebuilt with this build's binary), runs it as
// a non-root container with the host's Docker socket, a data volume and a
// port published on 127.0.0.1, waits for its HEALTHCHECK (dtma healthcheck)
// to report healthy, deploys a tool through it and reaches the tool. It
// removes everything it made, by label.
func TestImageRunsAsManagerContainer(t *testing.T) {
	m := newManagerFixture(t)
	t.Parallel()
	tag := "dtma-e2e-manager:" + strings.ToLower(m.hostID)
	m.build(binPath, tag)
	ctx := context.Background()
	img, err := m.dc.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := img.Config; cfg == nil || cfg.User != "65532:65532" || cfg.Healthcheck == nil || strings.Join(cfg.Healthcheck.Test, " ") != "CMD /dtma healthcheck" {
		t.Fatalf("image config: %+v", img.Config)
	}
	id := m.start(tag)
	Eventually(t, 2*time.Minute, "the manager container healthy (HEALTHCHECK dtma healthcheck)", func() bool {
		ins, err := m.dc.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		return err == nil && ins.Container.State != nil && ins.Container.State.Health != nil && ins.Container.State.Health.Status == "healthy"
	})
	c := m.client()
	h, err := c.Health(ctx)
	if err != nil || h.HostID != m.hostID || !h.DockerOK || !h.RegistryOK {
		t.Fatalf("agent health: %+v, %v\n%s", h, err, m.logs(id))
	}
	toolPort := freePort(t)
	name := "via-image-" + uniqueSuffix()
	inst, created, err := c.Deploy(ctx, dtmahttp.DeployRequest{Name: name, Image: EchoImage(t), PullPolicy: "never",
		Env: map[string]string{"ECHO": name}, Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: toolPort}}})
	if err != nil || !created || inst.DTMAStatus != "running" {
		t.Fatalf("deploy through the image: %+v %v\n%s", inst, err, m.logs(id))
	}
	Eventually(t, 30*time.Second, "the tool answering", func() bool { return HTTPGet(toolPort, "/") == name })
	tool, err := m.dc.ContainerInspect(ctx, inst.ContainerID, client.ContainerInspectOptions{})
	if err != nil || tool.Container.Config.Labels["dtma.host"] != m.hostID {
		t.Fatalf("tool container: %v %v", err, tool.Container.Config)
	}
	if ins, _ := m.dc.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); ins.Container.Config.User != "65532:65532" {
		t.Errorf("manager runs as %q", ins.Container.Config.User)
	}
	if err := c.Remove(ctx, name); err != nil {
		t.Errorf("remove through the image: %v", err)
	}
}

// TestManagerContainerUpgradeAndRollback: the dtma_manager container of
// version N (an image of the previous commit's binary) is replaced by one
// of N+1 (this build) on the same data volume, then rolled back. Each time
// every tool keeps its container id and StartedAt, and the new agent's
// first answers serve every instance.
func TestManagerContainerUpgradeAndRollback(t *testing.T) {
	m := newManagerFixture(t)
	prev := buildPrevious(t)
	t.Parallel()
	tagPrev := "dtma-e2e-manager:prev-" + strings.ToLower(m.hostID)
	tagNew := "dtma-e2e-manager:new-" + strings.ToLower(m.hostID)
	m.build(prev, tagPrev)
	m.build(binPath, tagNew)
	m.useVolume()
	ctx := context.Background()
	img := EchoImage(t)

	id := m.start(tagPrev)
	c := m.client()
	type tool struct {
		name, cid, started string
		port               int
	}
	var tools []*tool
	for i := 0; i < 3; i++ {
		tl := &tool{name: "upgrade-" + strconv.Itoa(i) + "-" + uniqueSuffix(), port: freePort(t)}
		inst, _, err := c.Deploy(ctx, dtmahttp.DeployRequest{Name: tl.name, Image: img, PullPolicy: "never",
			Env: map[string]string{"ECHO": tl.name}, Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: tl.port}}})
		if err != nil {
			t.Fatalf("deploy %s: %v\n%s", tl.name, err, m.logs(id))
		}
		Eventually(t, 30*time.Second, tl.name+" answering", func() bool { return HTTPGet(tl.port, "/") == tl.name })
		ins, err := m.dc.ContainerInspect(ctx, inst.ContainerID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tl.cid, tl.started = inst.ContainerID, ins.Container.State.StartedAt
		tools = append(tools, tl)
	}

	for _, step := range []struct{ name, image, version string }{{"upgrade to N+1", tagNew, "dev"}, {"rollback to N", tagPrev, "prev"}} {
		m.stop(id)
		begin := time.Now()
		id = m.start(step.image)
		for _, tl := range tools {
			inst, err := c.Instance(ctx, tl.name)
			if err != nil || inst.ContainerID != tl.cid || inst.DTMAStatus != "running" {
				t.Fatalf("%s: %s served as %+v, %v; want container %s running", step.name, tl.name, inst, err, tl.cid)
			}
		}
		t.Logf("%s: every instance served %v after the container was started", step.name, time.Since(begin).Round(time.Millisecond))
		Eventually(t, time.Minute, step.name+": a relist after the start", func() bool {
			h, err := c.Health(ctx)
			return err == nil && h.LastObservedAt != nil && h.LastObservedAt.After(begin)
		})
		if h, _ := c.Health(ctx); h.Version != step.version {
			t.Errorf("%s: agent version %q, want %q", step.name, h.Version, step.version)
		}
		for _, tl := range tools {
			ins, err := m.dc.ContainerInspect(ctx, tl.cid, client.ContainerInspectOptions{})
			if err != nil {
				t.Fatalf("%s: container of %s gone: %v", step.name, tl.name, err)
			}
			if ins.Container.State.StartedAt != tl.started || !ins.Container.State.Running {
				t.Errorf("%s: %s restarted or stopped: StartedAt %s -> %s, running %v", step.name, tl.name, tl.started, ins.Container.State.StartedAt, ins.Container.State.Running)
			}
			if !Serves(tl.port, "/", tl.name) {
				t.Errorf("%s: %s does not answer", step.name, tl.name)
			}
		}
	}
}
