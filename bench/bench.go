package main

// The measurements of one N, and the raw Engine API they are compared with.

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentopia/dtma/internal/dockertest"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// bench holds what every N shares: the Docker client, the agent binary,
// the image and the run id.
type bench struct {
	docker *client.Client
	dir    string // temp dir: binary, data dirs, logs
	bin    string
	image  string
	runID  string
	commit string
	runs   int // agents started, for distinct host ids
	// agentEnv is added to every agent's environment (-agent-env).
	agentEnv []string
}

// newBench builds the agent binary and the echo image.
func newBench(ctx context.Context) (*bench, error) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return nil, fmt.Errorf("ping docker: %w", err)
	}
	dir, err := os.MkdirTemp("", "dtma-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{docker: c, dir: dir, bin: filepath.Join(dir, "dtma"), runID: newRunID()}
	// Built as the Dockerfile and the release build it: static, stripped
	// (the process's file-backed pages are the binary's).
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.bin, "./cmd/dtma")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build agent: %w\n%s", err, out)
	}
	if b.image, err = dockertest.BuildEchoImage(ctx, c); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		b.commit = strings.TrimSpace(string(out))
	}
	fmt.Fprintf(os.Stderr, "bench: run %s, image %s, work dir %s\n", b.runID, b.image, dir)
	return b, nil
}

// header is the text above the table: machine, date, commit.
func (b *bench) header() string {
	cpu := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	ver := ""
	if v, err := b.docker.ServerVersion(context.Background(), client.ServerVersionOptions{}); err == nil {
		ver = "Docker Engine " + v.Version + " (API " + v.APIVersion + ")"
	}
	return fmt.Sprintf("`go run ./bench` on %d cores (%s), %s, %s, %s, commit %s.\n\n",
		runtime.NumCPU(), cpu, ver, runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 MST"), b.commit)
}

// labelFilter selects what this run made.
func (b *bench) labelFilter() client.Filters {
	return make(client.Filters).Add("label", BenchLabel+"="+b.runID)
}

// cleanup removes every container and network labelled with this run's
// bench label, and nothing else.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	list, err := b.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: b.labelFilter()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: cleanup: list: %v\n", err)
		return
	}
	parallel(len(list.Items), 8, func(i int) error {
		id := list.Items[i].ID
		if list.Items[i].Labels[BenchLabel] != b.runID {
			return nil
		}
		_, err := b.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			fmt.Fprintf(os.Stderr, "bench: cleanup: remove %s: %v\n", id, err)
		}
		return nil
	})
	nets, err := b.docker.NetworkList(ctx, client.NetworkListOptions{Filters: b.labelFilter()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: cleanup: list networks: %v\n", err)
		return
	}
	for _, n := range nets.Items {
		if n.Labels[BenchLabel] != b.runID {
			continue
		}
		if _, err := b.docker.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			fmt.Fprintf(os.Stderr, "bench: cleanup: remove network %s: %v\n", n.Name, err)
		}
	}
}

// rawRun creates and starts one container on Docker's default bridge
// (echo image, port 8080 published on 127.0.0.1, bench label), through the
// Engine API directly: what a plain `docker run -d -p` costs.
func (b *bench) rawRun(ctx context.Context, name string) error {
	port, _ := network.PortFrom(8080, network.TCP)
	return b.rawCreateStart(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        b.image,
			Labels:       map[string]string{BenchLabel: b.runID},
			ExposedPorts: network.PortSet{port: {}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
		},
	})
}

// rawCreateStart creates and starts one container through the Engine API.
func (b *bench) rawCreateStart(ctx context.Context, opts client.ContainerCreateOptions) error {
	res, err := b.docker.ContainerCreate(ctx, opts)
	if err != nil {
		return fmt.Errorf("raw create: %w", err)
	}
	if _, err := b.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("raw start: %w", err)
	}
	return nil
}

// mirror returns a function that creates and starts, through the Engine
// API directly, a container with the configuration the agent gave the
// container id (read back by inspect): the same image, capabilities,
// limits, log settings and network (the agent's isolated bridge), with the
// bench label instead of the dtma.* labels (so the agent never sees it)
// and the host port left to Docker. It measures what Docker itself costs
// for the container the agent asks for.
func (b *bench) mirror(ctx context.Context, id string) (func(ctx context.Context, name string) error, error) {
	m, err := b.mirrorConfig(ctx, id)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, name string) error {
		return b.rawCreateStart(ctx, m.options(name, map[string]string{BenchLabel: b.runID}))
	}, nil
}

// mirrored is an agent container's configuration read back by inspect,
// ready to be replayed through the Engine API.
type mirrored struct {
	cfg    container.Config
	hc     container.HostConfig
	netCfg *network.NetworkingConfig
	labels map[string]string // the agent's labels, as found
}

// mirrorConfig reads the configuration of the container id back by
// inspect: everything but its name, hostname, labels and host ports (left
// to Docker).
func (b *bench) mirrorConfig(ctx context.Context, id string) (*mirrored, error) {
	in, err := b.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect the agent's container: %w", err)
	}
	m := &mirrored{cfg: *in.Container.Config, hc: *in.Container.HostConfig, labels: in.Container.Config.Labels}
	m.cfg.Labels = nil
	m.cfg.Hostname = ""
	pb := network.PortMap{}
	for p, bs := range m.hc.PortBindings {
		for _, bnd := range bs {
			bnd.HostPort = ""
			pb[p] = append(pb[p], bnd)
		}
	}
	m.hc.PortBindings = pb
	if nets := in.Container.NetworkSettings; nets != nil && len(nets.Networks) > 0 {
		m.netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{}}
		for _, ep := range nets.Networks {
			m.netCfg.EndpointsConfig[ep.NetworkID] = &network.EndpointSettings{NetworkID: ep.NetworkID}
		}
	}
	return m, nil
}

// options returns the create options of a container named name with m's
// configuration and the given labels.
func (m *mirrored) options(name string, labels map[string]string) client.ContainerCreateOptions {
	c, h := m.cfg, m.hc
	c.Labels = labels
	var nc *network.NetworkingConfig
	if m.netCfg != nil {
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{}}
		for k, ep := range m.netCfg.EndpointsConfig {
			e := *ep
			nc.EndpointsConfig[k] = &e
		}
	}
	return client.ContainerCreateOptions{Name: name, Config: &c, HostConfig: &h, NetworkingConfig: nc}
}

// rawRemove removes the raw containers whose names start with prefix.
func (b *bench) rawRemove(ctx context.Context, prefix string) {
	list, err := b.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: b.labelFilter().Add("name", prefix)})
	if err != nil {
		return
	}
	parallel(len(list.Items), 8, func(i int) error {
		_, _ = b.docker.ContainerRemove(ctx, list.Items[i].ID, client.ContainerRemoveOptions{Force: true})
		return nil
	})
}

// result is what one N measured.
type result struct {
	n                       int
	seqAgent, seqRaw        time.Duration // median of one deploy
	seqSame                 time.Duration // median of one raw create+start of the agent's own container config
	burstN, burstOK         int
	burstAgent, burstRaw    time.Duration // wall
	listP50, statusP50      time.Duration
	engineListP50           time.Duration
	getOneRPS               float64
	killReady, rebuildReady time.Duration
	rebuildCount            int
	restartedByRebuild      int
	rss                     float64
	rssAnon, rssFile        float64 // private memory; pages of the binary (clean, shared, reclaimable)
	rssIdle                 float64 // at the end of the idle window
	rssIdleAnon             float64
	idleWrites              int
	idleWindow              time.Duration
	bridgeNote              string
}

// startAgent starts a fresh agent (a host id and data directory of its
// own) and waits until it is ready. The caller kills it.
func (b *bench) startAgent(ctx context.Context) (*agentProc, error) {
	b.runs++
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	a := &agentProc{bin: b.bin, dataDir: filepath.Join(b.dir, fmt.Sprintf("data-%d", b.runs)),
		hostID: fmt.Sprintf("bench-%s-%d", b.runID, b.runs), label: b.runID, port: port, env: b.agentEnv}
	if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := a.start(); err != nil {
		return nil, err
	}
	if _, err := a.ready(ctx, time.Minute); err != nil {
		a.kill()
		return nil, err
	}
	return a, nil
}

// run measures one N on a fresh agent.
func (b *bench) run(ctx context.Context, n, seq, burst int, idle time.Duration) (*result, error) {
	r := &result{n: n, idleWindow: idle}
	a, err := b.startAgent(ctx)
	if err != nil {
		return nil, err
	}
	defer a.kill()
	step := func(s string) { fmt.Fprintf(os.Stderr, "bench: N=%d: %s\n", n, s) }

	// Sequential deploys, alternating raw and agent.
	step("sequential deploys")
	if seq > n {
		seq = n
	}
	// The first agent deploy is the template of the raw "same container"
	// side; it counts as one of the N.
	if err := a.deploy(ctx, "seq-template", b.image, true); err != nil {
		return nil, err
	}
	var tmpl struct {
		ContainerID string `json:"container_id"`
	}
	if _, err := a.do(ctx, "GET", "/v1/instances/seq-template", nil, &tmpl); err != nil || tmpl.ContainerID == "" {
		return nil, fmt.Errorf("the template instance's container: %v", err)
	}
	same, err := b.mirror(ctx, tmpl.ContainerID)
	if err != nil {
		return nil, err
	}
	if seq > n-1 {
		seq = n - 1
	}
	var agentT, rawT, sameT []time.Duration
	for i := 0; i < seq; i++ {
		t := time.Now()
		if err := b.rawRun(ctx, fmt.Sprintf("bench-raw-%s-seq-%d", b.runID, i)); err != nil {
			return nil, err
		}
		rawT = append(rawT, time.Since(t))
		t = time.Now()
		if err := same(ctx, fmt.Sprintf("bench-raw-%s-seqsame-%d", b.runID, i)); err != nil {
			return nil, err
		}
		sameT = append(sameT, time.Since(t))
		t = time.Now()
		if err := a.deploy(ctx, fmt.Sprintf("seq-%d", i), b.image, true); err != nil {
			return nil, err
		}
		agentT = append(agentT, time.Since(t))
	}
	r.seqAgent, r.seqRaw, r.seqSame = pct(agentT, 0.5), pct(rawT, 0.5), pct(sameT, 0.5)
	b.rawRemove(ctx, "bench-raw-"+b.runID+"-seq")

	// A burst at concurrency 20: agent, then raw; both removed after.
	if burst > 0 {
		step(fmt.Sprintf("%d deploys at concurrency 20", burst))
		r.burstN = burst
		var ok atomic.Int64
		t := time.Now()
		parallel(burst, 20, func(i int) error {
			if err := a.deploy(ctx, fmt.Sprintf("burst-%d", i), b.image, false); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %v\n", err)
				return err
			}
			ok.Add(1)
			return nil
		})
		r.burstAgent, r.burstOK = time.Since(t), int(ok.Load())
		t = time.Now()
		if err := parallel(burst, 20, func(i int) error {
			return b.rawRun(ctx, fmt.Sprintf("bench-raw-%s-burst-%d", b.runID, i))
		}); err != nil {
			return nil, err
		}
		r.burstRaw = time.Since(t)
		b.rawRemove(ctx, "bench-raw-"+b.runID+"-burst-")
		parallel(burst, 8, func(i int) error {
			_, err := a.do(ctx, "DELETE", "/v1/instances/burst-"+strconv.Itoa(i), nil, nil)
			return err
		})
	}

	// Fill up to N.
	step("deploying the rest")
	var failed atomic.Int64
	rest := n - seq - 1 // the template and the sequential ones are deployed
	parallel(rest, 8, func(i int) error {
		if err := a.deploy(ctx, fmt.Sprintf("fill-%d", i), b.image, false); err != nil {
			failed.Add(1)
			if failed.Load() < 5 {
				fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			}
			return err
		}
		return nil
	})
	if f := failed.Load(); f > 0 {
		r.bridgeNote = fmt.Sprintf("%d of %d deploys failed", f, rest)
	}

	// Reads.
	step("reads")
	if r.listP50, err = timeIt(200, func() error { return expect(a.do(ctx, "GET", "/v1/instances", nil, nil)) }); err != nil {
		return nil, err
	}
	if r.statusP50, err = timeIt(200, func() error { return expect(a.do(ctx, "GET", "/tools/status", nil, nil)) }); err != nil {
		return nil, err
	}
	hostFilter := make(client.Filters).Add("label", "dtma.host="+a.hostID)
	if r.engineListP50, err = timeIt(10, func() error {
		_, err := b.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: hostFilter})
		return err
	}); err != nil {
		return nil, err
	}
	// Five windows of 2 s, the median: one window on this shared machine
	// varies by ±30 %.
	var rps []float64
	for i := 0; i < 5; i++ {
		rps = append(rps, hammer(ctx, a, "/v1/instances/seq-template", 32, 2*time.Second))
	}
	slices.Sort(rps)
	r.getOneRPS = rps[len(rps)/2]
	step(fmt.Sprintf("GET one, 5 windows of 2 s (req/s): %.0f", rps))
	r.rss = a.rssMB()
	r.rssAnon, r.rssFile = a.statusMB("RssAnon:"), a.statusMB("RssFile:")
	step("Go memory after the reads (MiB): " + a.memBreakdown(ctx))

	// Registry writes while idle.
	step("idle writes")
	r.idleWrites = countWrites(ctx, filepath.Join(a.dataDir, "dtma.db"), idle)
	r.rssIdle, r.rssIdleAnon = a.rssMB(), a.statusMB("RssAnon:")
	step("Go memory after the idle window (MiB): " + a.memBreakdown(ctx))

	// SIGKILL, then start again.
	step("SIGKILL and restart")
	before, err := b.startedAt(ctx, a.hostID)
	if err != nil {
		return nil, err
	}
	a.kill()
	if err := a.start(); err != nil {
		return nil, err
	}
	if r.killReady, err = a.ready(ctx, 5*time.Minute); err != nil {
		return nil, err
	}

	// Registry lost.
	step("registry deleted")
	a.kill()
	for _, f := range []string{"dtma.db", "dtma.db-wal", "dtma.db-shm"} {
		_ = os.Remove(filepath.Join(a.dataDir, f))
	}
	if err := a.start(); err != nil {
		return nil, err
	}
	if r.rebuildReady, err = a.ready(ctx, 5*time.Minute); err != nil {
		return nil, err
	}
	var list struct {
		Instances []any `json:"instances"`
	}
	if err := expect(a.do(ctx, "GET", "/v1/instances", nil, &list)); err != nil {
		return nil, err
	}
	r.rebuildCount = len(list.Instances)
	after, err := b.startedAt(ctx, a.hostID)
	if err != nil {
		return nil, err
	}
	for id, t := range before {
		if after[id] != t {
			r.restartedByRebuild++
		}
	}
	if r.bridgeNote == "" {
		r.bridgeNote = "all deployed (isolated shards of 1000)"
	}
	return r, nil
}

// startedAt maps each container of host to its StartedAt (by inspect).
func (b *bench) startedAt(ctx context.Context, host string) (map[string]string, error) {
	list, err := b.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "dtma.host="+host)})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.Items))
	var mu sync.Mutex
	err = parallel(len(list.Items), 16, func(i int) error {
		in, err := b.docker.ContainerInspect(ctx, list.Items[i].ID, client.ContainerInspectOptions{})
		if err != nil {
			return err
		}
		mu.Lock()
		out[list.Items[i].ID] = in.Container.State.StartedAt
		mu.Unlock()
		return nil
	})
	return out, err
}

// expect turns a non-2xx answer into an error.
func expect(code int, err error) error {
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("status %d", code)
	}
	return nil
}

// timeIt runs f k times and returns the median.
func timeIt(k int, f func() error) (time.Duration, error) {
	var ts []time.Duration
	for i := 0; i < k; i++ {
		t := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		ts = append(ts, time.Since(t))
	}
	return pct(ts, 0.5), nil
}

// pct returns the p-th percentile of ts.
func pct(ts []time.Duration, p float64) time.Duration {
	if len(ts) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

// hammer GETs path with clients concurrent clients for d and returns the
// successful requests per second.
func hammer(ctx context.Context, a *agentProc, path string, clients int, d time.Duration) float64 {
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if code, err := a.do(ctx, "GET", path, nil, nil); err == nil && code == http.StatusOK {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// countWrites counts the changes of the SQLite file and its WAL (size or
// modification time) seen while polling for d.
func countWrites(ctx context.Context, db string, d time.Duration) int {
	sig := func() string {
		var s []string
		for _, f := range []string{db, db + "-wal"} {
			if fi, err := os.Stat(f); err == nil {
				s = append(s, fmt.Sprint(fi.Size(), fi.ModTime().UnixNano()))
			}
		}
		return strings.Join(s, "|")
	}
	last, n := sig(), 0
	for end := time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; {
		time.Sleep(50 * time.Millisecond)
		if s := sig(); s != last {
			n++
			last = s
		}
	}
	return n
}

// parallel runs f(0..n-1) on at most width goroutines and returns the
// first error (every call runs regardless).
func parallel(n, width int, f func(i int) error) error {
	sem := make(chan struct{}, width)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return first
}
