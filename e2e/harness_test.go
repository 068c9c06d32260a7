package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/moby/moby/client"
)

// binPath is the dtma binary TestMain builds once for the package.
var binPath string

// portBlock hands each agent its own block of host ports to allocate from,
// so that parallel agents never race for one port.
var portBlock atomic.Int32

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dtma-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "dtma")
	args := []string{"build", "-o", binPath}
	cgo := "CGO_ENABLED=0"
	if os.Getenv("DTMA_E2E_RACE") == "1" {
		// The agent under the race detector: a report in its output fails
		// the test that ran it (see StartAgent's cleanup).
		args, cgo = append(args, "-race"), "CGO_ENABLED=1"
	}
	build := exec.Command("go", append(args, "github.com/agentopia/dtma/cmd/dtma")...)
	build.Env = append(os.Environ(), cgo)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build dtma:", err)
		os.Exit(1)
	}
	// Each process starts at its own allocation block, so two suites run
	// at once on one daemon rarely probe the same host ports.
	portBlock.Store(int32(os.Getpid() % 300))
	code := dockertest.Main(m) // then sweeps what this run left on the daemon
	os.RemoveAll(dir)
	os.Exit(code)
}

// NetworkSubnets is the pool test agents cut their networks' subnets from
// (a /22 per network at the default shard size: 64 networks at once).
const NetworkSubnets = "10.213.0.0/16"

// Token is the bearer token every test agent accepts.
const Token = "e2e-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"

// AgentOptions configure a test agent. Zero values get test defaults.
type AgentOptions struct {
	HostID      string   // default: unique per agent
	DataDir     string   // default: t.TempDir()
	RegistryURL string   // default: SQLite in DataDir
	DockerHost  string   // default: the machine's daemon
	Env         []string // extra KEY=VALUE, applied last
	Bin         string   // the dtma binary; default: the one TestMain built
}

// Agent is a running dtma serve process.
type Agent struct {
	t       testing.TB
	Opts    AgentOptions
	Port    int
	URL     string
	HostID  string
	Docker  *client.Client
	portLo  int
	cmd     *exec.Cmd
	exited  chan struct{}
	logMu   sync.Mutex
	logs    bytes.Buffer
	stopped bool
}

// StartAgent starts an agent and waits until /health answers. It registers
// cleanup that kills the agent and removes the containers this test run
// made for the agent's host id (and only those).
func StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	a := newAgent(t, opts)
	a.start()
	return a
}

// StartAgents starts one agent per options, width at a time, and returns
// them in the order of opts once all answer. It fails t (from the test's
// goroutine) when any does not start; those that did are cleaned up as
// StartAgent's are.
func StartAgents(t testing.TB, width int, opts []AgentOptions) []*Agent {
	t.Helper()
	agents := make([]*Agent, len(opts))
	for i, o := range opts {
		agents[i] = newAgent(t, o)
		agents[i].Port = agentPort(t)
	}
	errs := make([]error, len(agents))
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = a.tryStart()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	return agents
}

// newAgent prepares an agent (options defaulted, cleanup registered)
// without starting it.
func newAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	dc := dockertest.Client(t)
	if opts.HostID == "" {
		opts.HostID = "e2e-" + dockertest.RunID() + "-" + strconv.Itoa(int(portBlock.Add(1)))
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	a := &Agent{t: t, Opts: opts, HostID: opts.HostID, Docker: dc}
	// Below the kernel's ephemeral range (32768-60999), where freePort
	// draws from, so a test's own port never collides with an allocation.
	a.portLo = 20000 + int(portBlock.Add(1)%300)*40
	t.Cleanup(func() {
		a.Kill()
		if strings.Contains(a.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the agent reported a data race:\n%s", a.Logs())
		}
		removeContainers(dc, "label="+dockertest.TestLabel+"="+dockertest.RunID(), "label=dtma.host="+a.HostID)
		// The agent's networks (isolated mode), once their containers are gone.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dockertest.RemoveNetworks(ctx, dc, dockertest.TestLabel+"="+dockertest.RunID(), "dtma.host="+a.HostID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return a
}

// removeContainers force-removes the containers matching every filter
// (label=k=v), which always include this run's test label.
func removeContainers(dc *client.Client, filters ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := client.Filters{}
	for _, kv := range filters {
		k, v, _ := strings.Cut(kv, "=")
		f = f.Add(k, v)
	}
	list, err := dc.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, c := range list.Items {
		_, _ = dc.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Env returns the environment the agent runs with.
func (a *Agent) Env() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"DTMA_BEARER_TOKEN=" + Token,
		"DTMA_LISTEN=127.0.0.1:" + strconv.Itoa(a.Port),
		"DTMA_DATA_DIR=" + a.Opts.DataDir,
		"DTMA_HOST_ID=" + a.HostID,
		"DTMA_DEFAULT_HOST_IP=127.0.0.1",
		"DTMA_CONTAINER_LABELS=" + dockertest.TestLabel + "=" + dockertest.RunID(),
		"DTMA_PORT_RANGE=" + strconv.Itoa(a.portLo) + "-" + strconv.Itoa(a.portLo+39),
		"DTMA_RESYNC_INTERVAL=2s",
		// Isolated networks get subnets from a pool of their own: Docker's
		// default pools hold only ~31 networks for every test on the daemon.
		"DTMA_NETWORK_SUBNETS=" + NetworkSubnets,
		"DTMA_STOP_TIMEOUT=5s",
		"DTMA_LOG_LEVEL=debug",
	}
	if a.Opts.RegistryURL != "" {
		env = append(env, "DTMA_REGISTRY_URL="+a.Opts.RegistryURL)
	}
	if a.Opts.DockerHost != "" {
		env = append(env, "DOCKER_HOST="+a.Opts.DockerHost)
	} else if h := os.Getenv("DOCKER_HOST"); h != "" {
		env = append(env, "DOCKER_HOST="+h)
	}
	return append(env, a.Opts.Env...)
}

type logWriter struct{ a *Agent }

func (w logWriter) Write(p []byte) (int, error) {
	w.a.logMu.Lock()
	defer w.a.logMu.Unlock()
	return w.a.logs.Write(p)
}

// agentPortNext walks the range agent listen ports are drawn from.
var agentPortNext atomic.Int32

// agentPort returns a port on 127.0.0.1 for an agent to listen on, free a
// moment ago, from 10000-19999: below both the allocation blocks
// (20000-31999) and the kernel's ephemeral range, so no client connection
// and no freePort of another test or package can take it while the agent
// restarts. Each test process starts at its own offset.
func agentPort(t testing.TB) int {
	t.Helper()
	agentPortNext.CompareAndSwap(0, int32(os.Getpid()*7919%10000)+1)
	for i := 0; i < 10000; i++ {
		p := 10000 + int(agentPortNext.Add(1))%10000
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatalf("no free agent port in 10000-19999")
	return 0
}

// start runs the agent and waits until it answers. /health must answer
// and the process must have logged its start-up line, so an unrelated
// server that happens to hold the port is never taken for the agent; an
// agent that cannot bind its port is started again on another one.
func (a *Agent) start() {
	a.t.Helper()
	if err := a.tryStart(); err != nil {
		a.t.Fatalf("%v", err)
	}
}

// tryStart is start returning the error instead of failing the test, so
// that it may run on a goroutine of its own.
func (a *Agent) tryStart() error {
	a.t.Helper()
	if a.Port == 0 {
		a.Port = agentPort(a.t)
	}
	for attempt := 1; ; attempt++ {
		err := a.startOnce()
		if err == nil {
			return nil
		}
		if attempt < 3 && errors.Is(err, errPortTaken) {
			a.t.Logf("agent port %d taken by another process; starting on another one", a.Port)
			a.Port = agentPort(a.t)
			continue
		}
		return err
	}
}

// errPortTaken says the agent exited because its listen port was in use.
var errPortTaken = errors.New("agent port in use")

func (a *Agent) startOnce() error {
	a.t.Helper()
	a.URL = "http://127.0.0.1:" + strconv.Itoa(a.Port)
	logFrom := len(a.Logs())
	bin := binPath
	if a.Opts.Bin != "" {
		bin = a.Opts.Bin
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = a.Env()
	cmd.Stdout, cmd.Stderr = logWriter{a}, logWriter{a}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	a.cmd, a.exited, a.stopped = cmd, make(chan struct{}), false
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, a.exited)
	started := func() bool { return strings.Contains(a.Logs()[logFrom:], `"msg":"dtma starting"`) }
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			a.stopped = true
			if strings.Contains(a.Logs()[logFrom:], "address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("agent exited at start:\n%s", a.Logs())
		default:
		}
		resp, err := http.Get(a.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && started() {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("agent did not answer /health within 30s:\n%s", a.Logs())
}

// Logs returns everything the agent wrote so far.
func (a *Agent) Logs() string {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.logs.String()
}

// Kill sends SIGKILL and waits for the process to end.
func (a *Agent) Kill() {
	if a.cmd == nil || a.stopped {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	a.stopped = true
}

// Stop sends SIGTERM and waits (up to 20 s) for a graceful exit.
func (a *Agent) Stop() {
	if a.cmd == nil || a.stopped {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.t.Errorf("agent did not stop within 20s after SIGTERM")
		_ = a.cmd.Process.Signal(syscall.SIGKILL)
		<-a.exited
	}
	a.stopped = true
}

// Restart starts the agent again with the same options, data and port.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Kill()
	a.start()
}

// Response is an HTTP answer.
type Response struct {
	Status int
	Body   []byte
	Header http.Header
}

// JSON decodes the body into a generic map (fails the test otherwise).
func (r *Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// Decode decodes the body into v.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode body: %v\n%s", err, r.Body)
	}
}

// Do sends a request with the agent's token. body may be nil, a string
// (sent as is) or a value (sent as JSON).
func (a *Agent) Do(method, path string, body any) *Response {
	a.t.Helper()
	return a.DoAuth(method, path, body, "Bearer "+Token)
}

// DoAuth is Do with an explicit Authorization header ("" sends none).
func (a *Agent) DoAuth(method, path string, body any, auth string) *Response {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			a.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.URL+path, rd)
	if err != nil {
		a.t.Fatalf("request: %v", err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 3 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v\nagent log:\n%s", method, path, err, a.Logs())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return &Response{Status: resp.StatusCode, Body: data, Header: resp.Header}
}

// Expect is Do that fails the test unless the status is want.
func (a *Agent) Expect(want int, method, path string, body any) *Response {
	a.t.Helper()
	r := a.Do(method, path, body)
	if r.Status != want {
		a.t.Fatalf("%s %s: status %d, want %d\n%s", method, path, r.Status, want, r.Body)
	}
	return r
}

// Eventually polls cond every 100 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// Inspect returns the container's Docker state, or nil when it is gone.
func (a *Agent) Inspect(idOrName string) *client.ContainerInspectResult {
	a.t.Helper()
	res, err := a.Docker.ContainerInspect(context.Background(), idOrName, client.ContainerInspectOptions{})
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "no such container") {
			return nil
		}
		a.t.Fatalf("inspect %s: %v", idOrName, err)
	}
	return &res
}

// HostContainers lists the containers labelled for this agent's host.
func (a *Agent) HostContainers() []string {
	a.t.Helper()
	f := client.Filters{}.Add("label", "dtma.host="+a.HostID)
	list, err := a.Docker.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		a.t.Fatalf("list: %v", err)
	}
	var ids []string
	for _, c := range list.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// HTTPGet fetches http://127.0.0.1:port/path from a published container
// port, returning "" on any failure.
func HTTPGet(port int, path string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Serves reports whether http://127.0.0.1:port/path answers want within
// 30 s (a cap for a loaded machine, not a performance bound). A failed request (a tool still starting, a connection reset by
// Docker's proxy) is tried again; a tool that keeps answering anything
// else fails the check.
func Serves(port int, path, want string) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if HTTPGet(port, path) == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// EchoImage is the test image (built once, FROM scratch).
func EchoImage(t testing.TB) string { return dockertest.EchoImage(t) }

// Client returns the v1 client (the one the CLI uses) for this agent.
func (a *Agent) Client() *dtmahttp.Client { return dtmahttp.NewClient(a.URL, Token) }
