package e2e

import (
	"archive/tar"
	"bytes"
	"context"
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
// expects: the static binary TestMain built, the host's CA certificates and
// an empty data directory.
func prebuiltContext(t *testing.T) []byte {
	t.Helper()
	bin, err := os.ReadFile(binPath)
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

// TestImageRunsAsManagerContainer builds the agent's image FROM scratch
// (deploy/docker/Dockerfile.prebuilt with this build's binary), runs it as
// a non-root container with the host's Docker socket, a data volume and a
// port published on 127.0.0.1, waits for its HEALTHCHECK (dtma healthcheck)
// to report healthy, deploys a tool through it and reaches the tool. It
// removes everything it made, by label.
func TestImageRunsAsManagerContainer(t *testing.T) {
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
	t.Parallel()
	dc := dockertest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := dockertest.RunID()
	tag := "dtma-e2e-manager:" + strings.ToLower(run)
	hostID := "e2e-img-" + run
	t.Cleanup(func() {
		removeContainers(dc, "label="+dockertest.TestLabel+"="+run, "label=dtma.host="+hostID)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := dc.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", dockertest.TestLabel+"="+run).Add("label", "dtma.e2e-role=manager")})
		for _, c := range list.Items {
			_, _ = dc.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		_ = dockertest.RemoveNetworks(ctx, dc, dockertest.TestLabel+"="+run, "dtma.host="+hostID)
		_, _ = dc.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true})
	})
	if err := dockertest.BuildImage(ctx, dc, prebuiltContext(t), tag); err != nil {
		t.Fatal(err)
	}
	img, err := dc.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := img.Config; cfg == nil || cfg.User != "65532:65532" || cfg.Healthcheck == nil || strings.Join(cfg.Healthcheck.Test, " ") != "CMD /dtma healthcheck" {
		t.Fatalf("image config: %+v", img.Config)
	}

	apiPort := freePort(t)
	toolPort := freePort(t)
	lo := 20000 + int(portBlock.Add(1)%300)*40
	p := network.MustParsePort("30000/tcp")
	res, err := dc.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "dtma_manager-" + strings.ToLower(run),
		Config: &container.Config{
			Image: tag,
			Env: []string{
				"DTMA_BEARER_TOKEN=" + Token,
				"DTMA_HOST_ID=" + hostID,
				"DTMA_DEFAULT_HOST_IP=127.0.0.1",
				"DTMA_CONTAINER_LABELS=" + dockertest.TestLabel + "=" + run,
				"DTMA_PORT_RANGE=" + strconv.Itoa(lo) + "-" + strconv.Itoa(lo+39),
				"DTMA_NETWORK_SUBNETS=" + NetworkSubnets,
			},
			Labels:       map[string]string{dockertest.TestLabel: run, "dtma.e2e-role": "manager"},
			ExposedPorts: network.PortSet{p: {}},
			// The image's test (dtma healthcheck), checked more often.
			Healthcheck: &container.HealthConfig{Interval: time.Second, Timeout: 5 * time.Second, Retries: 3},
		},
		HostConfig: &container.HostConfig{
			Binds:        []string{"/var/run/docker.sock:/var/run/docker.sock"},
			GroupAdd:     []string{strconv.Itoa(int(st.Gid))},
			PortBindings: network.PortMap{p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(apiPort)}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		rc, err := dc.ContainerLogs(ctx, res.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
		if err != nil {
			return err.Error()
		}
		defer rc.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(rc)
		return b.String()
	}
	var health string
	Eventually(t, 2*time.Minute, "the manager container healthy (HEALTHCHECK dtma healthcheck)", func() bool {
		ins, err := dc.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{})
		if err != nil || ins.Container.State == nil {
			return false
		}
		if !ins.Container.State.Running {
			t.Fatalf("the manager container stopped:\n%s", logs())
		}
		if ins.Container.State.Health != nil {
			health = string(ins.Container.State.Health.Status)
		}
		return health == "healthy"
	})

	c := dtmahttp.NewClient("http://127.0.0.1:"+strconv.Itoa(apiPort), Token)
	h, err := c.Health(ctx)
	if err != nil || h.HostID != hostID || !h.DockerOK || !h.RegistryOK {
		t.Fatalf("agent health: %+v, %v\n%s", h, err, logs())
	}
	name := "via-image-" + uniqueSuffix()
	inst, created, err := c.Deploy(ctx, dtmahttp.DeployRequest{Name: name, Image: EchoImage(t), PullPolicy: "never",
		Env: map[string]string{"ECHO": name}, Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: toolPort}}})
	if err != nil || !created || inst.DTMAStatus != "running" {
		t.Fatalf("deploy through the image: %+v %v\n%s", inst, err, logs())
	}
	Eventually(t, 30*time.Second, "the tool answering", func() bool { return HTTPGet(toolPort, "/") == name })
	tool, err := dc.ContainerInspect(ctx, inst.ContainerID, client.ContainerInspectOptions{})
	if err != nil || tool.Container.Config.Labels["dtma.host"] != hostID {
		t.Fatalf("tool container: %v %v", err, tool.Container.Config)
	}
	// The registry lives on the data volume, written by the unprivileged user.
	ins, _ := dc.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{})
	if ins.Container.Config.User != "65532:65532" {
		t.Errorf("manager runs as %q", ins.Container.Config.User)
	}
	if err := c.Remove(ctx, name); err != nil {
		t.Errorf("remove through the image: %v", err)
	}
}
