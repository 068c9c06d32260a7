package docker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
)

// rtFixture is shared by the subtests of TestRuntime: one Runtime, one raw
// client for checks, the echo image. Every container it creates carries
// dtma.test=<run id> (Options.ExtraLabels) and is removed when TestRuntime
// ends, after all its parallel subtests.
type rtFixture struct {
	rt    *docker.Runtime
	c     *client.Client
	image string
}

func newRTFixture(t *testing.T) *rtFixture {
	t.Helper()
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	dockertest.Cleanup(t, c, dockertest.TestLabel+"="+dockertest.RunID())
	rt, err := docker.New(docker.Options{DefaultHostIP: "127.0.0.1", ExtraLabels: dockertest.Labels(), Network: docker.NetworkBridge})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return &rtFixture{rt: rt, c: c, image: image}
}

// forHost returns a Runtime like f.rt scoped to hostID (ListContainers and
// Events see that host's containers).
func (f *rtFixture) forHost(t *testing.T, hostID string) *docker.Runtime {
	t.Helper()
	rt, err := docker.New(docker.Options{HostID: hostID, DefaultHostIP: "127.0.0.1", ExtraLabels: dockertest.Labels(), Network: docker.NetworkBridge})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// hostID returns a host id unique to this subtest, so parallel subtests
// never see each other's containers.
func rtHostID(t *testing.T) string {
	return "test-" + dockertest.RunID() + "-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
}

// dtmaLabels returns the labels the agent would put on a container.
func rtLabels(hostID, name string) map[string]string {
	return map[string]string{
		dtma.LabelManaged:  "true",
		dtma.LabelHost:     hostID,
		dtma.LabelInstance: name,
	}
}

// create creates an echo container named after the subtest (plus suffix)
// for hostID, publishing 8080/tcp on a free port of the default host IP.
func (f *rtFixture) create(t *testing.T, hostID, suffix string, env map[string]string) (id, name string, port int) {
	t.Helper()
	name = "dtma-test-" + dockertest.RunID() + "-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + suffix
	port = dockertest.FreePort(t)
	id, err := f.rt.CreateContainer(context.Background(), dtma.ContainerConfig{
		Name:   name,
		Image:  f.image,
		Env:    env,
		Ports:  []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: port}},
		Labels: rtLabels(hostID, name),
	})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	return id, name, port
}

func (f *rtFixture) start(t *testing.T, id string) {
	t.Helper()
	if already, err := f.rt.StartContainer(context.Background(), id); err != nil || already {
		t.Fatalf("StartContainer(%s) = already %v, err %v; want false, nil", id, already, err)
	}
}

func (f *rtFixture) inspect(t *testing.T, id string) *dtma.Container {
	t.Helper()
	c, err := f.rt.InspectContainer(context.Background(), id)
	if err != nil {
		t.Fatalf("InspectContainer(%s): %v", id, err)
	}
	return c
}

// httpGet polls url until the container's server answers 200 and returns
// the body. It gives up when the test's bounded wait ends.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("status %d (read error %v)", resp.StatusCode, rerr)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: no 200 answer: %v", url, last)
	return ""
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := dtma.ErrorCode(err); got != code {
		t.Fatalf("%s: error code %q (err %v), want %q", what, got, err, code)
	}
	var de *dtma.Error
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %T is not a *dtma.Error", what, err)
	}
}

func TestRuntime(t *testing.T) {
	f := newRTFixture(t)

	t.Run("CreateStartServes", func(t *testing.T) {
		t.Parallel()
		host := rtHostID(t)
		secret := "s3cret-" + dockertest.RunID()
		id, name, port := f.create(t, host, "", map[string]string{"ECHO": secret, "OTHER": "plain value"})
		f.start(t, id)

		if got := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/"); got != secret {
			t.Errorf("GET / = %q, want the ECHO env value", got)
		}
		if got := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/env/OTHER"); got != "plain value" {
			t.Errorf("GET /env/OTHER = %q, want %q", got, "plain value")
		}

		c := f.inspect(t, id)
		if c.ID != id || c.Name != name || c.Image != f.image {
			t.Errorf("inspect: id %q name %q image %q, want %q %q %q", c.ID, c.Name, c.Image, id, name, f.image)
		}
		wantLabels := rtLabels(host, name)
		wantLabels[dockertest.TestLabel] = dockertest.RunID()
		if !reflect.DeepEqual(c.Labels, wantLabels) {
			t.Errorf("labels = %v, want exactly %v", c.Labels, wantLabels)
		}
		for k, v := range c.Labels {
			if strings.Contains(k, secret) || strings.Contains(v, secret) {
				t.Errorf("label %s carries an env value", k)
			}
		}
		if c.Env["ECHO"] != secret || c.Env["OTHER"] != "plain value" {
			t.Errorf("env = %v, want ECHO and OTHER as created", c.Env)
		}
		wantPorts := []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: port, HostIP: "127.0.0.1"}}
		if !reflect.DeepEqual(c.Ports, wantPorts) {
			t.Errorf("ports = %+v, want %+v", c.Ports, wantPorts)
		}
		if c.State != dtma.DockerRunning || c.StartedAt.IsZero() || !c.FinishedAt.IsZero() || c.CreatedAt.IsZero() {
			t.Errorf("state %q started %v finished %v created %v; want running, started, never finished, created",
				c.State, c.StartedAt, c.FinishedAt, c.CreatedAt)
		}
		if c.CreatedAt.After(c.StartedAt) {
			t.Errorf("created %v after started %v", c.CreatedAt, c.StartedAt)
		}
	})

	t.Run("SafeDefaults", func(t *testing.T) {
		t.Parallel()
		id, _, _ := f.create(t, rtHostID(t), "", nil)
		res, err := f.c.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hc := res.Container.HostConfig
		if !slices.Equal(hc.SecurityOpt, []string{"no-new-privileges:true"}) {
			t.Errorf("SecurityOpt = %v", hc.SecurityOpt)
		}
		if hc.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
			t.Errorf("RestartPolicy = %+v, want unless-stopped", hc.RestartPolicy)
		}
		wantLog := container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}}
		if !reflect.DeepEqual(hc.LogConfig, wantLog) {
			t.Errorf("LogConfig = %+v, want %+v", hc.LogConfig, wantLog)
		}
		if hc.Privileged {
			t.Error("container is privileged")
		}
		if hc.NetworkMode.IsHost() || hc.PidMode.IsHost() || hc.IpcMode.IsHost() {
			t.Errorf("host namespaces: network %q pid %q ipc %q", hc.NetworkMode, hc.PidMode, hc.IpcMode)
		}
		if res.Container.Config.Tty {
			t.Error("container has a TTY")
		}
	})

	t.Run("StartStopIdempotent", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		id, _, port := f.create(t, rtHostID(t), "", map[string]string{"ECHO": "up"})
		if already, err := f.rt.StopContainer(ctx, id, 5*time.Second); err != nil || !already {
			t.Fatalf("stop of a created container = already %v, err %v; want true, nil", already, err)
		}
		f.start(t, id)
		if already, err := f.rt.StartContainer(ctx, id); err != nil || !already {
			t.Fatalf("second start = already %v, err %v; want true, nil", already, err)
		}
		// Serving means the server has installed its SIGTERM handler.
		httpGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/")
		if already, err := f.rt.StopContainer(ctx, id, 10*time.Second); err != nil || already {
			t.Fatalf("stop = already %v, err %v; want false, nil", already, err)
		}
		c := f.inspect(t, id)
		// Exit code 0: the server got SIGTERM and shut down within the
		// timeout instead of being killed (137).
		if c.State != dtma.DockerExited || c.ExitCode != 0 || c.FinishedAt.IsZero() {
			t.Errorf("after stop: state %q exit %d finished %v; want exited, 0, set", c.State, c.ExitCode, c.FinishedAt)
		}
		if already, err := f.rt.StopContainer(ctx, id, 10*time.Second); err != nil || !already {
			t.Fatalf("second stop = already %v, err %v; want true, nil", already, err)
		}
	})

	t.Run("RestartChangesStartedAt", func(t *testing.T) {
		t.Parallel()
		id, _, port := f.create(t, rtHostID(t), "", map[string]string{"ECHO": "up"})
		f.start(t, id)
		httpGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/")
		before := f.inspect(t, id)
		if err := f.rt.RestartContainer(context.Background(), id, 10*time.Second); err != nil {
			t.Fatalf("RestartContainer: %v", err)
		}
		after := f.inspect(t, id)
		if after.State != dtma.DockerRunning || !after.StartedAt.After(before.StartedAt) {
			t.Errorf("after restart: state %q started %v (before %v); want running and later", after.State, after.StartedAt, before.StartedAt)
		}
		if got := httpGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/"); got != "up" {
			t.Errorf("GET / after restart = %q", got)
		}
	})

	t.Run("RemoveTwice", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		id, name, _ := f.create(t, rtHostID(t), "", nil)
		f.start(t, id)
		if err := f.rt.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("remove running container: %v", err)
		}
		if err := f.rt.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("second remove: %v", err)
		}
		_, err := f.rt.InspectContainer(ctx, name)
		wantCode(t, "inspect removed container", err, dtma.ENOTFOUND)
	})

	t.Run("MissingContainer", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		missing := "dtma-test-" + dockertest.RunID() + "-does-not-exist"
		_, err := f.rt.InspectContainer(ctx, missing)
		wantCode(t, "inspect", err, dtma.ENOTFOUND)
		if !strings.Contains(dtma.ErrorMessage(err), missing) {
			t.Errorf("message %q does not name the container", dtma.ErrorMessage(err))
		}
		_, err = f.rt.StartContainer(ctx, missing)
		wantCode(t, "start", err, dtma.ENOTFOUND)
		_, err = f.rt.StopContainer(ctx, missing, time.Second)
		wantCode(t, "stop", err, dtma.ENOTFOUND)
		err = f.rt.RestartContainer(ctx, missing, time.Second)
		wantCode(t, "restart", err, dtma.ENOTFOUND)
		_, err = f.rt.ContainerLogs(ctx, missing, dtma.LogOptions{})
		wantCode(t, "logs", err, dtma.ENOTFOUND)
	})

	t.Run("NameConflict", func(t *testing.T) {
		t.Parallel()
		host := rtHostID(t)
		_, name, _ := f.create(t, host, "", nil)
		_, err := f.rt.CreateContainer(context.Background(), dtma.ContainerConfig{
			Name: name, Image: f.image, Labels: rtLabels(host, name),
		})
		wantCode(t, "create with a taken name", err, dtma.ECONFLICT)
	})

	t.Run("CreateErrorsHideEnv", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		secret := "hush-" + dockertest.RunID()
		// Docker echoes an invalid env entry back ("invalid environment
		// variable: =<value>"); the value must not reach the error.
		_, err := f.rt.CreateContainer(ctx, dtma.ContainerConfig{
			Name:   "dtma-test-" + dockertest.RunID() + "-bad-env",
			Image:  f.image,
			Env:    map[string]string{"": secret},
			Labels: rtLabels(rtHostID(t), "bad-env"),
		})
		wantCode(t, "create with an invalid env entry", err, dtma.EINVALID)
		if strings.Contains(err.Error(), secret) || strings.Contains(dtma.ErrorMessage(err), secret) {
			t.Errorf("error reveals the env value: %v", err)
		}
		_, err = f.rt.CreateContainer(ctx, dtma.ContainerConfig{
			Name:  "dtma-test-" + dockertest.RunID() + "-no-image",
			Image: "dtma-test-absent-" + dockertest.RunID() + ":none",
			Env:   map[string]string{"TOKEN": secret},
		})
		wantCode(t, "create from an absent image", err, dtma.ENOTFOUND)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error reveals the env value: %v", err)
		}
	})

	t.Run("InvalidPort", func(t *testing.T) {
		t.Parallel()
		_, err := f.rt.CreateContainer(context.Background(), dtma.ContainerConfig{
			Name:  "dtma-test-" + dockertest.RunID() + "-bad-port",
			Image: f.image,
			Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 1, HostIP: "not-an-ip"}},
		})
		wantCode(t, "create with a bad host ip", err, dtma.EINVALID)
		if dtma.ErrorField(err) != "ports[0].host_ip" {
			t.Errorf("field = %q, want ports[0].host_ip", dtma.ErrorField(err))
		}
	})

	t.Run("ListOnlyThisHost", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		host := rtHostID(t)
		running, _, port := f.create(t, host, "-a", map[string]string{"ECHO": "x"})
		f.start(t, running)
		created, _, _ := f.create(t, host, "-b", nil)
		other, _, _ := f.create(t, host+"-other", "-c", nil)
		// A container with no dtma labels at all (only the test label).
		unlabelled, err := f.rt.CreateContainer(ctx, dtma.ContainerConfig{
			Name: "dtma-test-" + dockertest.RunID() + "-unlabelled", Image: f.image,
		})
		if err != nil {
			t.Fatal(err)
		}

		list, err := f.forHost(t, host).ListContainers(ctx)
		if err != nil {
			t.Fatalf("ListContainers: %v", err)
		}
		got := map[string]*dtma.Container{}
		for _, c := range list {
			got[c.ID] = c
		}
		if len(got) != 2 || got[running] == nil || got[created] == nil {
			t.Fatalf("ListContainers(%s) = %d containers %v, want exactly %s and %s (not %s, %s)",
				host, len(list), keys(got), running, created, other, unlabelled)
		}
		r := got[running]
		if !r.Summary || r.State != dtma.DockerRunning || r.Labels[dtma.LabelHost] != host || r.Name == "" || r.CreatedAt.IsZero() {
			t.Errorf("listed running container: summary %v state %q labels %v name %q created %v", r.Summary, r.State, r.Labels, r.Name, r.CreatedAt)
		}
		if got[created].State != dtma.DockerCreated {
			t.Errorf("listed created container state %q", got[created].State)
		}
		// What the summary leaves out, inspect gives.
		full, err := f.rt.InspectContainer(ctx, running)
		if err != nil {
			t.Fatal(err)
		}
		if full.Summary || full.Name != r.Name || full.Env["ECHO"] != "x" || len(full.Ports) != 1 || full.Ports[0].HostPort != port || full.StartedAt.IsZero() {
			t.Errorf("inspected running container: name %q env ECHO %q ports %+v started %v", full.Name, full.Env["ECHO"], full.Ports, full.StartedAt)
		}

		list, err = f.forHost(t, host+"-other").ListContainers(ctx)
		if err != nil || len(list) != 1 || list[0].ID != other {
			t.Errorf("ListContainers(other host) = %v, %v; want only %s", list, err, other)
		}
		list, err = f.forHost(t, host+"-nobody").ListContainers(ctx)
		if err != nil || len(list) != 0 {
			t.Errorf("ListContainers(unknown host) = %v, %v; want none", list, err)
		}
		// A runtime made without a host id lists nothing: it refuses.
		if _, err := f.rt.ListContainers(ctx); dtma.ErrorCode(err) != dtma.EINVALID {
			t.Errorf("ListContainers without a host id: %v, want EINVALID", err)
		}
	})

	t.Run("LogsTail", func(t *testing.T) {
		t.Parallel()
		id, _, port := f.create(t, rtHostID(t), "", nil)
		f.start(t, id)
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		httpGet(t, base+"/env/A")
		httpGet(t, base+"/env/B")
		httpGet(t, base+"/env/C")
		waitLogLine(t, f.rt, id, "request GET /env/C")

		all := readLogs(t, f.rt, id, dtma.LogOptions{})
		if len(all) < 4 || all[0] != "listening on :8080" || all[len(all)-1] != "request GET /env/C" {
			t.Fatalf("all logs = %q, want listening line first and GET /env/C last", all)
		}
		tail := readLogs(t, f.rt, id, dtma.LogOptions{Tail: 2})
		if want := all[len(all)-2:]; !slices.Equal(tail, want) {
			t.Errorf("tail 2 = %q, want %q", tail, want)
		}
	})

	t.Run("LogsStderr", func(t *testing.T) {
		t.Parallel()
		// A bad EXIT_AFTER_MS makes the server complain on stderr and exit.
		id, _, _ := f.create(t, rtHostID(t), "", map[string]string{"EXIT_AFTER_MS": "soon"})
		f.start(t, id)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rc, err := f.rt.ContainerLogs(ctx, id, dtma.LogOptions{Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if !scanFor(rc, "bad EXIT_AFTER_MS") {
			t.Errorf("stderr line not in the logs")
		}
	})

	t.Run("LogsFollow", func(t *testing.T) {
		t.Parallel()
		id, _, port := f.create(t, rtHostID(t), "", nil)
		f.start(t, id)
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		httpGet(t, base+"/env/first")
		waitLogLine(t, f.rt, id, "request GET /env/first")

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rc, err := f.rt.ContainerLogs(ctx, id, dtma.LogOptions{Tail: 1, Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		br := bufio.NewReader(rc)
		if line, err := br.ReadString('\n'); err != nil || line != "request GET /env/first\n" {
			t.Fatalf("first followed line = %q, %v", line, err)
		}
		httpGet(t, base+"/env/second")
		if line, err := br.ReadString('\n'); err != nil || line != "request GET /env/second\n" {
			t.Fatalf("next followed line = %q, %v; want the new request", line, err)
		}
		cancel()
		if rest, err := io.ReadAll(br); err != nil {
			t.Errorf("after ctx end: read %q, err %v; want a clean EOF", rest, err)
		}
	})

	t.Run("Events", func(t *testing.T) {
		t.Parallel()
		host := rtHostID(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		events, errc := f.forHost(t, host).Events(ctx)

		// Another host's container goes through a full life first.
		otherID, _, _ := f.create(t, host+"-other", "-other", nil)
		f.start(t, otherID)
		if err := f.rt.RemoveContainer(ctx, otherID); err != nil {
			t.Fatal(err)
		}
		// Ours crashes once with code 7, then is removed.
		id, _, _ := f.create(t, host, "", map[string]string{"EXIT_AFTER_MS": "1", "EXIT_CODE": "7"})
		f.start(t, id)

		seen := map[string]dtma.ContainerEvent{}
		removed := false
		for ev := range events {
			if ev.ContainerID != id {
				t.Errorf("event %s for container %s of another host", ev.Action, ev.ContainerID)
				continue
			}
			if _, ok := seen[ev.Action]; !ok {
				seen[ev.Action] = ev
			}
			if ev.Action == "die" && !removed {
				removed = true
				if err := f.rt.RemoveContainer(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if ev.Action == "destroy" {
				break
			}
		}
		for _, a := range []string{"create", "start", "die", "destroy"} {
			if _, ok := seen[a]; !ok {
				t.Errorf("no %q event for our container (saw %v)", a, keys(seen))
			}
		}
		if die := seen["die"]; die.ExitCode != 7 {
			t.Errorf("die exit code = %d, want 7", die.ExitCode)
		}
		start := seen["start"]
		if start.Labels[dtma.LabelHost] != host || start.Labels[dockertest.TestLabel] != dockertest.RunID() {
			t.Errorf("start event labels = %v, want the container's labels", start.Labels)
		}
		for _, k := range []string{"name", "image", "exitCode"} {
			if _, ok := seen["die"].Labels[k]; ok {
				t.Errorf("die event labels contain Docker attribute %q", k)
			}
		}
		if start.Time.IsZero() {
			t.Error("start event has no time")
		}

		cancel()
		for ev := range events {
			_ = ev // drain until closed
		}
		if err, ok := <-errc; ok {
			t.Errorf("error channel after ctx end: %v, want closed without error", err)
		}
	})
}

// readLogs returns the container's (non-follow) log lines.
func readLogs(t *testing.T, rt *docker.Runtime, id string, opts dtma.LogOptions) []string {
	t.Helper()
	rc, err := rt.ContainerLogs(context.Background(), id, opts)
	if err != nil {
		t.Fatalf("ContainerLogs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read logs: %v", err)
	}
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\t' {
			t.Fatalf("logs contain control byte %#x (stream framing?): %q", c, b)
		}
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitLogLine polls the container's logs until their last line is line:
// Docker collects output asynchronously, so a request's log line may land
// shortly after its response.
func waitLogLine(t *testing.T, rt *docker.Runtime, id, line string) {
	t.Helper()
	var lines []string
	for range 600 {
		lines = readLogs(t, rt, id, dtma.LogOptions{Tail: 1})
		if len(lines) == 1 && lines[0] == line {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("log line %q never became the last line (last: %q)", line, lines)
}

// scanFor reads lines until one contains s (true) or the stream ends.
func scanFor(r io.Reader, s string) bool {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestRuntimeUnavailable points the runtime at a socket that does not
// exist: every call reports EUNAVAILABLE.
func TestRuntimeUnavailable(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "no-docker.sock")
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket path %s unexpectedly exists", sock)
	}
	rt, err := docker.New(docker.Options{Host: "unix://" + sock, HostID: "h"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer rt.Close()
	ctx := context.Background()

	err = rt.Ping(ctx)
	wantCode(t, "ping", err, dtma.EUNAVAILABLE)
	if !strings.HasPrefix(dtma.ErrorMessage(err), "docker unavailable: ") {
		t.Errorf("message %q, want it to start with %q", dtma.ErrorMessage(err), "docker unavailable: ")
	}
	_, err = rt.InspectContainer(ctx, "x")
	wantCode(t, "inspect", err, dtma.EUNAVAILABLE)
	_, err = rt.ListContainers(ctx)
	wantCode(t, "list", err, dtma.EUNAVAILABLE)
	_, err = rt.CreateContainer(ctx, dtma.ContainerConfig{Name: "x", Image: "busybox", Env: map[string]string{"K": "secret-v"}, Labels: map[string]string{dtma.LabelHost: "h"}})
	wantCode(t, "create", err, dtma.EUNAVAILABLE)
	if strings.Contains(err.Error(), "secret-v") {
		t.Errorf("create error reveals an env value: %v", err)
	}
	_, err = rt.EnsureImage(ctx, "busybox:latest", dtma.PullMissing)
	wantCode(t, "ensure image", err, dtma.EUNAVAILABLE)
	_, err = rt.ContainerLogs(ctx, "x", dtma.LogOptions{})
	wantCode(t, "logs", err, dtma.EUNAVAILABLE)

	// A bare path works as a unix socket too.
	rt2, err := docker.New(docker.Options{Host: sock})
	if err != nil {
		t.Fatalf("New with a bare path: %v", err)
	}
	defer rt2.Close()
	wantCode(t, "ping (bare path)", rt2.Ping(ctx), dtma.EUNAVAILABLE)

	events, errc := rt.Events(ctx)
	err, ok := <-errc
	if !ok {
		t.Fatal("error channel closed without an error")
	}
	wantCode(t, "events", err, dtma.EUNAVAILABLE)
	if _, ok := <-events; ok {
		t.Error("event channel delivered an event")
	}
	if _, ok := <-errc; ok {
		t.Error("error channel delivered a second value")
	}
}

func TestNewInvalidOptions(t *testing.T) {
	t.Parallel()
	_, err := docker.New(docker.Options{DefaultHostIP: "localhost"})
	wantCode(t, "DefaultHostIP localhost", err, dtma.EINVALID)
	_, err = docker.New(docker.Options{Host: "no-scheme-here"})
	wantCode(t, "Host without a scheme", err, dtma.EINVALID)
}
