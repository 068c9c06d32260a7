package e2e

// This file holds the Unix-socket proxy that lets a test cut an agent off
// from Docker, and small helpers the reconciler tests share (crash, drift,
// registry loss, event stream, Docker down, two agents, migration,
// crash loop). Helper names start with "rc" so that they cannot clash with
// helpers other test files add to the package.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/moby/moby/client"
	_ "modernc.org/sqlite" // to read an agent's registry rows
)

// DockerProxy forwards connections from a Unix socket of its own to the
// Docker daemon's socket. Sever cuts every live connection and refuses new
// ones (like a daemon that died); Restore accepts again (the daemon is
// back). Start an agent with AgentOptions{DockerHost: p.Host()}.
type DockerProxy struct {
	t        testing.TB
	path     string // the proxy's socket
	upstream string // the daemon's socket

	mu      sync.Mutex
	l       *net.UnixListener // nil while severed
	conns   map[net.Conn]struct{}
	severed bool
	lines   []string // request lines the agent sent, "GET /v1.41/containers/json?..."
	hold    func(line string) bool
	wg      sync.WaitGroup
}

// Hold makes the proxy swallow every request whose request line satisfies
// match, with whatever its connection sends afterwards: Docker never sees
// it and the agent waits for an answer that never comes (as if it were
// killed between recording an intent and acting). Hold(nil) forwards
// everything again.
func (p *DockerProxy) Hold(match func(line string) bool) {
	p.mu.Lock()
	p.hold = match
	p.mu.Unlock()
}

// requestLines watches the HTTP request lines of one client connection
// (the bytes the agent sends; bodies are small JSON, never a line that
// starts with a method and ends in HTTP/1.1).
type requestLines struct {
	p    *DockerProxy
	part []byte
}

// scan records the request lines that b completes and reports whether
// one of them is to be held.
func (r *requestLines) scan(b []byte) (held bool) {
	r.part = append(r.part, b...)
	for {
		i := bytes.IndexByte(r.part, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(r.part[:i]), "\r")
		r.part = r.part[i+1:]
		// A body without a final newline (a JSON body the client did not
		// end with one) runs into the next request line: start at the
		// method.
		if strings.HasSuffix(line, " HTTP/1.1") {
			for _, m := range []string{"GET /", "POST /", "DELETE /", "HEAD /", "PUT /"} {
				if j := strings.Index(line, m); j > 0 {
					line = line[j:]
					break
				}
			}
		}
		if method, rest, ok := strings.Cut(line, " "); ok && strings.HasSuffix(rest, " HTTP/1.1") &&
			(method == "GET" || method == "POST" || method == "DELETE" || method == "HEAD" || method == "PUT") {
			line = method + " " + strings.TrimSuffix(rest, " HTTP/1.1")
			r.p.mu.Lock()
			r.p.lines = append(r.p.lines, line)
			if r.p.hold != nil && r.p.hold(line) {
				held = true
			}
			r.p.mu.Unlock()
		}
	}
	if len(r.part) > 64<<10 {
		r.part = r.part[len(r.part)-1024:] // a long body: keep only its tail
	}
	return held
}

// upstream copies what the agent sends to Docker, recording request lines
// and swallowing the rest of the connection from a held request on.
func (r *requestLines) upstream(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if r.scan(buf[:n]) {
				_, _ = io.Copy(io.Discard, src)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Requests returns how many requests the agent has sent through the
// proxy whose request line ("GET /v1.41/containers/json?all=1...")
// satisfies match.
func (p *DockerProxy) Requests(match func(line string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if match(l) {
			n++
		}
	}
	return n
}

// StartDockerProxy listens on a socket in a temp dir and forwards to the
// daemon (DOCKER_HOST when it is unix://, else /var/run/docker.sock). It is
// closed when the test ends.
func StartDockerProxy(t testing.TB) *DockerProxy {
	t.Helper()
	upstream := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		if !strings.HasPrefix(h, "unix://") {
			t.Skipf("DOCKER_HOST %s is not a unix socket; the proxy cannot stand in for it", h)
		}
		upstream = strings.TrimPrefix(h, "unix://")
	}
	dir := t.TempDir()
	if len(dir) > 90 { // sun_path holds 108 bytes
		d, err := os.MkdirTemp("", "dp")
		if err != nil {
			t.Fatalf("proxy dir: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	p := &DockerProxy{t: t, path: filepath.Join(dir, "d.sock"), upstream: upstream, conns: map[net.Conn]struct{}{}}
	if err := p.listen(); err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	t.Cleanup(p.close)
	return p
}

// Host is the DOCKER_HOST value that reaches the daemon through the proxy.
func (p *DockerProxy) Host() string { return "unix://" + p.path }

func (p *DockerProxy) listen() error {
	_ = os.Remove(p.path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.path, Net: "unix"})
	if err != nil {
		return err
	}
	// Keep the socket file when the listener closes: a client then gets
	// "connection refused", as from a daemon that died.
	l.SetUnlinkOnClose(false)
	p.mu.Lock()
	p.l, p.severed = l, false
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(l)
	return nil
}

func (p *DockerProxy) accept(l *net.UnixListener) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.severed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *DockerProxy) forward(c net.Conn) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	up, err := net.Dial("unix", p.upstream)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.severed {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, up)
		p.mu.Unlock()
		up.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { (&requestLines{p: p}).upstream(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done // either side ending ends both
}

// Sever closes every live connection (the agent's event stream among them)
// and refuses new ones until Restore.
func (p *DockerProxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.severed = true
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts connections again.
func (p *DockerProxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	up := p.l != nil
	p.mu.Unlock()
	if up {
		return
	}
	if err := p.listen(); err != nil {
		p.t.Fatalf("proxy restore: %v", err)
	}
}

func (p *DockerProxy) close() {
	p.Sever()
	p.wg.Wait()
	_ = os.Remove(p.path)
}

// rcList returns GET /v1/instances through the v1 client, failing the test
// on any error.
func rcList(t testing.TB, a *Agent) []dtmahttp.Instance {
	t.Helper()
	list, err := a.Client().Instances(context.Background())
	if err != nil {
		t.Fatalf("GET /v1/instances: %v", err)
	}
	return list
}

// rcGet returns GET /v1/instances/{ref} through the v1 client, and the
// HTTP status (the instance is zero unless it is 200).
func rcGet(t testing.TB, a *Agent, ref string) (dtmahttp.Instance, int) {
	t.Helper()
	inst, err := a.Client().Instance(context.Background(), ref)
	var api *dtmahttp.APIError
	switch {
	case err == nil:
		return inst, 200
	case errors.As(err, &api):
		return dtmahttp.Instance{}, api.Status
	}
	t.Fatalf("GET /v1/instances/%s: %v", ref, err)
	return inst, 0
}

// rcMustGet is rcGet that fails unless the instance is found.
func rcMustGet(t testing.TB, a *Agent, ref string) dtmahttp.Instance {
	t.Helper()
	inst, status := rcGet(t, a, ref)
	if status != 200 {
		t.Fatalf("GET /v1/instances/%s: status %d", ref, status)
	}
	return inst
}

// rcTry sends a request without failing the test on transport errors; it
// is safe to call from any goroutine (the agent may be dead).
func rcTry(baseURL, method, path string, body any, timeout time.Duration) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, baseURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// rcDeployBody is a v1 deploy body for the echo image.
func rcDeployBody(img, name, accountID string, env map[string]string, ports ...dtma.Port) map[string]any {
	body := map[string]any{"name": name, "image": img}
	if accountID != "" {
		body["account_tool_instance_id"] = accountID
	}
	if env != nil {
		body["env"] = env
	}
	if ports != nil {
		body["ports"] = ports
	}
	return body
}

// rcDeploy deploys and returns the instance, failing unless the agent
// answers 201.
func rcDeploy(t testing.TB, a *Agent, body map[string]any) dtmahttp.Instance {
	t.Helper()
	r := a.Expect(201, "POST", "/v1/instances", body)
	var inst dtmahttp.Instance
	r.Decode(t, &inst)
	if inst.DTMAStatus != "running" || inst.DockerStatus != "running" {
		t.Fatalf("deploy %v answered %s", body["name"], r.Body)
	}
	return inst
}

// rcLastObserved returns /v1/health's last_observed_at: the end of the
// reconciler's last successful relist (zero when none yet).
func rcLastObserved(t testing.TB, a *Agent) time.Time {
	t.Helper()
	r := a.Do("GET", "/v1/health", nil)
	var h struct {
		LastObservedAt *time.Time `json:"last_observed_at"`
	}
	r.Decode(t, &h)
	if h.LastObservedAt == nil {
		return time.Time{}
	}
	return *h.LastObservedAt
}

// rcWaitRelists waits until the reconciler has finished n more relists
// than when called (the resync interval is 2 s in the harness).
func rcWaitRelists(t testing.TB, a *Agent, n int) {
	t.Helper()
	last := rcLastObserved(t, a)
	for i := 0; i < n; i++ {
		prev := last
		Eventually(t, 60*time.Second, "a relist", func() bool {
			last = rcLastObserved(t, a)
			return last.After(prev)
		})
	}
}

// rcContainers lists the containers (running or not) matching every
// label filter given as "k=v".
func rcContainers(t testing.TB, dc *client.Client, labels ...string) []containerSummary {
	t.Helper()
	f := client.Filters{}
	for _, l := range labels {
		f = f.Add("label", l)
	}
	res, err := dc.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	out := make([]containerSummary, 0, len(res.Items))
	for _, c := range res.Items {
		out = append(out, containerSummary{ID: c.ID, State: string(c.State), Labels: c.Labels})
	}
	return out
}

type containerSummary struct {
	ID     string
	State  string
	Labels map[string]string
}

// rcStarted returns the container's ID, state and StartedAt as Docker
// reports them; ok is false when the container is gone.
func rcStarted(t testing.TB, a *Agent, idOrName string) (id, state, startedAt string, ok bool) {
	t.Helper()
	res := a.Inspect(idOrName)
	if res == nil {
		return "", "", "", false
	}
	c := res.Container
	return c.ID, string(c.State.Status), c.State.StartedAt, true
}

// rcRegistryRow reads an instance's row from the agent's SQLite registry
// (read-only) and returns its updated_at (unix microseconds) and
// docker_status. ok is false when there is no such row.
func rcRegistryRow(t testing.TB, a *Agent, id string) (updatedAt int64, dockerStatus string, ok bool) {
	t.Helper()
	path := filepath.Join(a.Opts.DataDir, "dtma.db")
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_query_only=1&_busy_timeout=5000"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatalf("open registry %s: %v", path, err)
	}
	defer db.Close()
	err = db.QueryRow(`SELECT updated_at, docker_status FROM dtma_container_registry WHERE id = ?`, id).Scan(&updatedAt, &dockerStatus)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false
	}
	if err != nil {
		t.Fatalf("read registry row %s: %v", id, err)
	}
	return updatedAt, dockerStatus, true
}

// rcStop, rcStart and rcRemove act on a container behind the agent's back
// with the test's own Docker client.
func rcStop(t testing.TB, a *Agent, id string) {
	t.Helper()
	timeout := 5
	if _, err := a.Docker.ContainerStop(context.Background(), id, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("docker stop %s: %v", id, err)
	}
}

func rcStart(t testing.TB, a *Agent, id string) {
	t.Helper()
	if _, err := a.Docker.ContainerStart(context.Background(), id, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("docker start %s: %v", id, err)
	}
}

func rcRemove(t testing.TB, a *Agent, id string) {
	t.Helper()
	if _, err := a.Docker.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatalf("docker rm -f %s: %v", id, err)
	}
}
