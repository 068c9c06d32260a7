package main

// The agent under measurement: the real binary, started and SIGKILLed by
// the bench.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// token is the bearer token of the bench's agents.
const token = "bench-token-0123456789abcdef0123"

// agentProc is one running dtma serve.
type agentProc struct {
	bin, dataDir, hostID, label string
	port                        int
	env                         []string // extra KEY=VALUE
	cmd                         *exec.Cmd
	logf                        *os.File
	http                        *http.Client
	started                     time.Time
}

// url returns the agent's base URL.
func (a *agentProc) url() string { return "http://127.0.0.1:" + strconv.Itoa(a.port) }

// start runs the binary; it does not wait for it to serve.
func (a *agentProc) start() error {
	cmd := exec.Command(a.bin, "serve")
	cmd.Env = append(os.Environ(),
		"DTMA_BEARER_TOKEN="+token,
		"DTMA_LISTEN=127.0.0.1:"+strconv.Itoa(a.port),
		"DTMA_DATA_DIR="+a.dataDir,
		"DTMA_HOST_ID="+a.hostID,
		"DTMA_DEFAULT_HOST_IP=127.0.0.1",
		"DTMA_CONTAINER_LABELS="+BenchLabel+"="+a.label,
		"DTMA_PORT_RANGE=45000-45999",
		"DTMA_NETWORK_SUBNETS=10.214.0.0/16",
		"DTMA_LOG_LEVEL=warn",
		"DTMA_UI=false",
		"DTMA_MAX_CONNECTIONS=4096",
		"DTMA_AUTH_FAILURE_LIMIT=0",
	)
	cmd.Env = append(cmd.Env, a.env...)
	if a.logf == nil {
		f, err := os.OpenFile(filepath.Join(filepath.Dir(a.dataDir), "agent-"+a.hostID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("agent log: %w", err)
		}
		a.logf = f
	}
	cmd.Stdout, cmd.Stderr = a.logf, a.logf
	a.started = time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	a.cmd = cmd
	if a.http == nil {
		a.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	}
	return nil
}

// kill SIGKILLs the agent and reaps it.
func (a *agentProc) kill() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
	a.cmd = nil
}

// ready waits (up to limit) until the agent serves /v1/health with a full
// observation made after its start, and returns the time from start.
func (a *agentProc) ready(ctx context.Context, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var h struct {
			LastObservedAt *time.Time `json:"last_observed_at"`
		}
		code, err := a.do(ctx, "GET", "/v1/health", nil, &h)
		if err == nil && code == http.StatusOK && h.LastObservedAt != nil && h.LastObservedAt.After(a.started) {
			return time.Since(a.started), nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("agent not ready within %s (log: %s)", limit, a.logf.Name())
}

// do sends a request with the token; out (when not nil) receives the JSON
// answer. It returns the status code.
func (a *agentProc) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.url()+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if out != nil && res.StatusCode < 300 {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			return res.StatusCode, err
		}
	} else {
		_, _ = io.Copy(io.Discard, res.Body)
	}
	return res.StatusCode, nil
}

// deploy deploys name on the echo image, with one published port when
// port is set, and returns an error unless the answer is 201.
func (a *agentProc) deploy(ctx context.Context, name, image string, port bool) error {
	body := map[string]any{"name": name, "image": image}
	if port {
		body["ports"] = []map[string]any{{"container_port": 8080}}
	}
	code, err := a.do(ctx, "POST", "/v1/instances", body, nil)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	if code != http.StatusCreated {
		return fmt.Errorf("deploy %s: status %d", name, code)
	}
	return nil
}

// rssMB reads the agent's VmRSS.
func (a *agentProc) rssMB() float64 { return a.statusMB("VmRSS:") }

// hwmMB reads the agent's VmHWM (peak RSS).
func (a *agentProc) hwmMB() float64 { return a.statusMB("VmHWM:") }

// statusMB reads the field key (in kB) of the agent's /proc status, in MB.
func (a *agentProc) statusMB(key string) float64 {
	if a.cmd == nil {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(a.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, key) {
			if f := strings.Fields(line); len(f) > 1 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// memBreakdown returns the agent's Go memory figures from /metrics, in
// MiB (heap in use and live, idle and released, stacks, runtime metadata),
// and its goroutines: where the private memory of the RSS row goes. It
// reads them without forcing a collection.
func (a *agentProc) memBreakdown(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, "GET", a.url()+"/metrics", nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := a.http.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	want := []string{"go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
		"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_mspan_inuse_bytes",
		"go_memstats_gc_sys_bytes", "go_memstats_other_sys_bytes", "go_memstats_next_gc_bytes", "go_goroutines"}
	got := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				got[f[0]] = v
			}
		}
	}
	var sb strings.Builder
	for _, k := range want {
		v, ok := got[k]
		if !ok {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(k, "go_memstats_"), "go_"), "_bytes")
		if strings.HasSuffix(k, "_bytes") {
			fmt.Fprintf(&sb, "%s %.1f ", name, v/(1<<20))
		} else {
			fmt.Fprintf(&sb, "%s %.0f ", name, v)
		}
	}
	return strings.TrimSpace(sb.String())
}
