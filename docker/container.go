package docker

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// Safe defaults applied to every container DTMA creates (see also
// CreateContainer: all capabilities dropped but cfg.CapAdd).
const (
	securityOpt   = "no-new-privileges:true"
	logDriver     = "json-file"
	logMaxSize    = "10m"
	logMaxFile    = "3"
	restartPolicy = container.RestartPolicyUnlessStopped
)

// CreateContainer creates (does not start) the container cfg describes:
// labels cfg.Labels merged over Options.ExtraLabels, env as sorted
// KEY=VALUE, each port exposed and published (HostIP "" becomes
// Options.DefaultHostIP, HostPort 0 lets Docker pick), restart policy
// unless-stopped, no-new-privileges, not privileged, json-file logs capped at
// 3 x 10 MB and private pid/ipc namespaces; every capability dropped but
// cfg.CapAdd; cfg.Limits as memory (swap not added on top), PIDs and CPU
// limits (a zero field: none); cfg.Stdio: stdin open and kept open across
// attaches, no TTY (see Attach). In isolated mode (the default) it joins its
// host's DTMA network with room (see pickNetwork; the host is the
// dtma.host label), else Docker's default bridge.
// ECONFLICT when the name is taken, ENOTFOUND when the image is absent,
// EINVALID for a bad port or a config Docker rejects, EUNAVAILABLE when the
// daemon cannot be reached. Errors never contain env values.
func (r *Runtime) CreateContainer(ctx context.Context, cfg dtma.ContainerConfig) (string, error) {
	labels := make(map[string]string, len(r.extraLabels)+len(cfg.Labels))
	for k, v := range r.extraLabels {
		labels[k] = v
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}

	env := make([]string, 0, len(cfg.Env))
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)

	exposed := network.PortSet{}
	bindings := network.PortMap{}
	for i, p := range cfg.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if p.ContainerPort < 1 || p.ContainerPort > math.MaxUint16 {
			return "", dtma.FieldErrorf(dtma.EINVALID, fmt.Sprintf("ports[%d].container_port", i), "container port %d is out of range", p.ContainerPort)
		}
		if p.HostPort < 0 || p.HostPort > math.MaxUint16 {
			return "", dtma.FieldErrorf(dtma.EINVALID, fmt.Sprintf("ports[%d].host_port", i), "host port %d is out of range", p.HostPort)
		}
		port, ok := network.PortFrom(uint16(p.ContainerPort), network.IPProtocol(proto))
		if !ok {
			return "", dtma.FieldErrorf(dtma.EINVALID, fmt.Sprintf("ports[%d].protocol", i), "bad protocol %q", p.Protocol)
		}
		hostIP := r.defaultHostIP
		if p.HostIP != "" {
			ip, err := netip.ParseAddr(p.HostIP)
			if err != nil {
				return "", dtma.FieldErrorf(dtma.EINVALID, fmt.Sprintf("ports[%d].host_ip", i), "%q is not an IP address", p.HostIP)
			}
			hostIP = ip
		}
		hostPort := ""
		if p.HostPort != 0 {
			hostPort = strconv.Itoa(p.HostPort)
		}
		exposed[port] = struct{}{}
		bindings[port] = append(bindings[port], network.PortBinding{HostIP: hostIP, HostPort: hostPort})
	}

	hc := &container.HostConfig{
		PortBindings:  bindings,
		RestartPolicy: container.RestartPolicy{Name: restartPolicy},
		SecurityOpt:   []string{securityOpt},
		Privileged:    false,
		CapDrop:       []string{"ALL"},
		CapAdd:        append([]string(nil), cfg.CapAdd...),
		LogConfig: container.LogConfig{
			Type:   logDriver,
			Config: map[string]string{"max-size": logMaxSize, "max-file": logMaxFile},
		},
	}
	if l := cfg.Limits; l.Memory > 0 {
		hc.Memory, hc.MemorySwap = l.Memory, l.Memory
	}
	if l := cfg.Limits; l.PIDs > 0 {
		pids := l.PIDs
		hc.PidsLimit = &pids
	}
	if l := cfg.Limits; l.MilliCPUs > 0 {
		hc.NanoCPUs = l.MilliCPUs * 1_000_000
	}
	var netCfg *network.NetworkingConfig
	created := false // for the network shard's count
	if r.isolated {
		id, release, err := r.pickNetwork(ctx, labels[dtma.LabelHost])
		if err != nil {
			return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
		}
		defer func() { release(created) }()
		// By id, also in the endpoint (what Docker resolves at start), so
		// that a network name that exists twice is never ambiguous.
		hc.NetworkMode = container.NetworkMode(id)
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{id: {NetworkID: id}}}
	}

	res, err := r.client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: cfg.Name,
		Config: &container.Config{
			Image:        cfg.Image,
			Env:          env,
			Labels:       labels,
			ExposedPorts: exposed,
			// A stdio server: stdin stays open across attaches, no TTY
			// (a TTY would mix stderr into stdout and mangle bytes).
			OpenStdin:    cfg.Stdio,
			StdinOnce:    false,
			Tty:          false,
			AttachStdin:  cfg.Stdio,
			AttachStdout: cfg.Stdio,
			AttachStderr: cfg.Stdio,
		},
		HostConfig:       hc,
		NetworkingConfig: netCfg,
	})
	if err != nil {
		return "", redactEnv(r.wrap(err, "create container %s", cfg.Name), cfg.Env)
	}
	created = true
	return res.ID, nil
}

// redactEnv returns err with every env value in its text replaced by
// "[redacted]", in case the daemon echoed part of the config back. The cause
// is replaced by a scrubbed copy that still answers errors.Is/As.
func redactEnv(err error, env map[string]string) error {
	e, ok := err.(*dtma.Error)
	if !ok {
		return err
	}
	values := make([]string, 0, len(env))
	for _, v := range env {
		if v != "" {
			values = append(values, v)
		}
	}
	sort.Slice(values, func(i, j int) bool { return len(values[i]) > len(values[j]) })
	scrub := func(s string) string {
		for _, v := range values {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
		return s
	}
	out := &dtma.Error{Code: e.Code, Field: e.Field, Message: scrub(e.Message)}
	if e.Err != nil {
		out.Err = scrubbed{text: scrub(e.Err.Error()), cause: e.Err}
	}
	return out
}

// scrubbed is a cause whose text has had secrets removed. It keeps the
// original for errors.Is/As (so classification keeps working) but never
// prints it.
type scrubbed struct {
	text  string
	cause error
}

func (s scrubbed) Error() string { return s.text }
func (s scrubbed) Unwrap() error { return s.cause }

// StartContainer starts the container with that id or name. already is true
// when it was running (Docker answered 304 Not Modified). ENOTFOUND when it
// does not exist.
func (r *Runtime) StartContainer(ctx context.Context, id string) (bool, error) {
	ctx, code := withStatus(ctx)
	if _, err := r.client.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return false, r.wrap(err, "start container %s", id)
	}
	return *code == http.StatusNotModified, nil
}

// StopContainer sends the stop signal and waits up to timeout (rounded up to
// whole seconds; Docker's granularity) before killing it. already is true
// when it was not running. ENOTFOUND when it does not exist. ctx must outlive
// timeout.
func (r *Runtime) StopContainer(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	secs := timeoutSeconds(timeout)
	ctx, code := withStatus(ctx)
	if _, err := r.client.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return false, r.wrap(err, "stop container %s", id)
	}
	return *code == http.StatusNotModified, nil
}

// RestartContainer stops the container (waiting up to timeout before killing
// it) and starts it again; a stopped container is just started. ENOTFOUND
// when it does not exist.
func (r *Runtime) RestartContainer(ctx context.Context, id string, timeout time.Duration) error {
	secs := timeoutSeconds(timeout)
	if _, err := r.client.ContainerRestart(ctx, id, client.ContainerRestartOptions{Timeout: &secs}); err != nil {
		return r.wrap(err, "restart container %s", id)
	}
	return nil
}

func timeoutSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// RemoveContainer force-removes the container (killing it if running) with
// its anonymous volumes. A container that does not exist is not an error.
// With isolation on, the host's extra network shards that no container
// uses any more are removed after it (see pruneNetworks).
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	_, err := r.client.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return r.wrap(err, "remove container %s", id)
	}
	if r.isolated && r.hostID != "" {
		r.pruneNetworks(ctx, r.hostID)
	}
	return nil
}

// InspectContainer returns the container with that id or name. Env is the
// container's whole environment, including variables its image defines;
// Ports are its configured bindings (HostConfig.PortBindings) exactly as
// Docker holds them (HostIP "" when published on all interfaces, HostPort 0
// when Docker picks it). ENOTFOUND when there is none.
func (r *Runtime) InspectContainer(ctx context.Context, idOrName string) (*dtma.Container, error) {
	res, err := r.client.ContainerInspect(ctx, idOrName, client.ContainerInspectOptions{})
	if err != nil {
		return nil, r.wrap(err, "inspect container %s", idOrName)
	}
	return fromInspect(res.Container), nil
}

// ListContainers returns every container (running or not) labelled
// dtma.host=HostID(), from one label-filtered list call and nothing else.
//
// Docker's list summary carries neither the environment, the port bindings
// nor StartedAt, exit code and restart count: the containers come back
// with Summary set, and callers that need the rest inspect. EUNAVAILABLE
// when the daemon cannot be reached; EINVALID when the Runtime has no host
// id.
func (r *Runtime) ListContainers(ctx context.Context) ([]*dtma.Container, error) {
	hostID := r.hostID
	if hostID == "" {
		return nil, errUnscoped("list containers")
	}
	res, err := r.client.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", dtma.LabelHost+"="+hostID),
	})
	if err != nil {
		return nil, r.wrap(err, "list containers of host %s", hostID)
	}
	out := make([]*dtma.Container, 0, len(res.Items))
	for _, s := range res.Items {
		if s.Labels[dtma.LabelHost] != hostID {
			continue // the filter guarantees this; never report another host's container
		}
		c := &dtma.Container{
			ID:        s.ID,
			Image:     s.Image,
			Labels:    map[string]string{},
			State:     dtma.DockerState(s.State),
			CreatedAt: time.Unix(s.Created, 0).UTC(),
			Summary:   true,
		}
		if len(s.Names) > 0 {
			c.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		for k, v := range s.Labels {
			c.Labels[k] = v
		}
		out = append(out, c)
	}
	return out, nil
}

// fromInspect converts Docker's inspect document.
func fromInspect(in container.InspectResponse) *dtma.Container {
	c := &dtma.Container{
		ID:           in.ID,
		Name:         strings.TrimPrefix(in.Name, "/"),
		RestartCount: in.RestartCount,
		CreatedAt:    parseTime(in.Created),
		Labels:       map[string]string{},
		Env:          map[string]string{},
	}
	if in.Config != nil {
		c.Image = in.Config.Image
		for k, v := range in.Config.Labels {
			c.Labels[k] = v
		}
		for _, kv := range in.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			c.Env[k] = v
		}
	}
	if in.State != nil {
		c.State = dtma.DockerState(in.State.Status)
		c.StartedAt = parseTime(in.State.StartedAt)
		c.FinishedAt = parseTime(in.State.FinishedAt)
		c.ExitCode = in.State.ExitCode
	}
	if in.HostConfig != nil {
		for port, bs := range in.HostConfig.PortBindings {
			for _, b := range bs {
				p := dtma.Port{ContainerPort: int(port.Num()), Protocol: string(port.Proto())}
				if b.HostIP.IsValid() {
					p.HostIP = b.HostIP.String()
				}
				p.HostPort, _ = strconv.Atoi(b.HostPort) // "" (Docker picks) -> 0
				c.Ports = append(c.Ports, p)
			}
		}
		dtma.SortPorts(c.Ports)
	}
	return c
}

// parseTime parses Docker's RFC 3339 timestamps; Docker's "never"
// (0001-01-01T00:00:00Z) and anything unparsable give the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}
