package heartbeat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/heartbeat"
	"github.com/agentopia/dtma/procfs"
)

const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// backend is a fake of the platform's heartbeat endpoint on 127.0.0.1.
type backend struct {
	srv    *httptest.Server
	status int // answer; 204 when 0

	mu   sync.Mutex
	reqs []request
	hit  chan struct{} // one value per request, never blocks
}

type request struct {
	method, path string
	header       http.Header
	body         []byte
}

func newBackend(t *testing.T, status int) *backend {
	t.Helper()
	b := &backend{status: status, hit: make(chan struct{}, 1000)}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, request{r.Method, r.URL.Path, r.Header.Clone(), body})
		b.mu.Unlock()
		select {
		case b.hit <- struct{}{}:
		default:
		}
		st := b.status
		if st == 0 {
			st = http.StatusNoContent
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(b.srv.Close)
	if !strings.HasPrefix(b.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test backend on %s, want 127.0.0.1", b.srv.URL)
	}
	return b
}

func (b *backend) requests() []request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]request(nil), b.reqs...)
}

// waitHits waits until n requests arrived or a generous deadline passed.
func (b *backend) waitHits(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-b.hit:
		case <-deadline:
			t.Fatalf("got %d heartbeats, want at least %d", len(b.requests()), n)
		}
	}
}

type fixedMetrics struct {
	m   dtma.SystemMetrics
	err error
}

func (f fixedMetrics) SystemMetrics(context.Context) (dtma.SystemMetrics, error) { return f.m, f.err }

var metrics = dtma.SystemMetrics{
	CPULoadPercent: 12.5,
	Memory:         dtma.MemoryMetric{TotalBytes: 1000, UsedBytes: 600, FreeBytes: 400},
	Disk:           dtma.DiskMetric{Mount: "/", TotalBytes: 5000, UsedBytes: 1000, FreeBytes: 4000},
}

func instances() []*dtma.Instance {
	started := time.Date(2025, 6, 18, 20, 24, 36, 123456789, time.UTC)
	return []*dtma.Instance{
		{
			Name:                  "Context7 MCP Server-1750278276605",
			AccountToolInstanceID: "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10",
			Spec: dtma.Spec{Image: "ghcr.io/example/mcp-server:1.2.0", Env: map[string]string{"API_KEY": "secret-value"},
				Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30000}}},
			Ports:        []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31005}},
			DesiredState: dtma.DesiredRunning,
			Status:       dtma.StatusRunning,
			Observed: dtma.Observed{
				DockerStatus: dtma.DockerRunning,
				ContainerID:  "abc123",
				StartedAt:    started,
				RestartCount: 1,
			},
		},
		{
			// No account id: not reported.
			Name:         "local-only",
			Spec:         dtma.Spec{Image: "example/other:1"},
			DesiredState: dtma.DesiredRunning,
			Status:       dtma.StatusRunning,
			Observed:     dtma.Observed{DockerStatus: dtma.DockerRunning, ContainerID: "def456"},
		},
		{
			Name:                  "crashing",
			AccountToolInstanceID: "11111111-2222-3333-4444-555555555555",
			Spec:                  dtma.Spec{Image: "example/crash:2"},
			DesiredState:          dtma.DesiredRunning,
			Status:                dtma.StatusCrashLoop,
			LastError:             "container exits with code 3",
			Observed: dtma.Observed{
				DockerStatus: dtma.DockerExited,
				ContainerID:  "ghi789",
				ExitCode:     3,
				RestartCount: 7,
			},
		},
	}
}

func TestSend_Body(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusNoContent)
	s := &heartbeat.Sender{
		URL:            be.srv.URL + "/functions/v1/",
		Token:          token,
		Version:        "1.2.3",
		RuntimeDetails: true, // for a backend that still has the column
		Metrics:        fixedMetrics{m: metrics},
		Instances:      func(context.Context) ([]*dtma.Instance, error) { return instances(), nil },
	}
	if err := s.Send(context.Background()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := be.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != "/functions/v1/heartbeat" {
		t.Errorf("request %s %s, want POST /functions/v1/heartbeat", r.method, r.path)
	}
	if got := r.header.Get("Authorization"); got != "Bearer "+token {
		t.Errorf("Authorization = %q, want Bearer <token>", got)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	if bytes.Contains(r.body, []byte("secret-value")) || bytes.Contains(r.body, []byte(token)) {
		t.Errorf("body carries a secret: %s", r.body)
	}

	const want = `{
	  "dtma_version": "1.2.3",
	  "system_status": {
	    "cpu_load_percent": 12.5,
	    "memory": {"total_bytes": 1000, "used_bytes": 600, "free_bytes": 400},
	    "disk": {"mount": "/", "total_bytes": 5000, "used_bytes": 1000, "free_bytes": 4000}
	  },
	  "tool_statuses": [
	    {
	      "account_tool_instance_id": "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10",
	      "status_on_toolbox": "running",
	      "runtime_details": {
	        "container_id": "abc123",
	        "image": "ghcr.io/example/mcp-server:1.2.0",
	        "started_at": "2025-06-18T20:24:36.123456789Z",
	        "ports": [{"ip": "0.0.0.0", "private_port": 8080, "public_port": 31005, "type": "tcp"}],
	        "state_details": {
	          "docker_status": "running", "dtma_status": "running", "desired_state": "running",
	          "exit_code": 0, "restart_count": 1, "drift": false, "last_error": ""
	        }
	      }
	    },
	    {
	      "account_tool_instance_id": "11111111-2222-3333-4444-555555555555",
	      "status_on_toolbox": "error",
	      "runtime_details": {
	        "container_id": "ghi789",
	        "image": "example/crash:2",
	        "started_at": "",
	        "ports": [],
	        "state_details": {
	          "docker_status": "exited", "dtma_status": "crashloop", "desired_state": "running",
	          "exit_code": 3, "restart_count": 7, "drift": true, "last_error": "container exits with code 3"
	        }
	      }
	    }
	  ]
	}`
	assertJSON(t, r.body, want)
}

// TestSend_DefaultBody: by default the body is what the 2025 backend can
// store: no runtime_details (its column was dropped), status words of its
// enum, and only instances with an account id.
func TestSend_DefaultBody(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusNoContent)
	list := append(instances(), &dtma.Instance{Name: "no account id", Status: dtma.StatusRunning,
		Observed: dtma.Observed{DockerStatus: dtma.DockerRunning}})
	list = append(list, &dtma.Instance{Name: "deploying", AccountToolInstanceID: "22222222-2222-3333-4444-555555555555",
		Status: dtma.StatusDeploying, PendingOp: dtma.OpDeploy})
	s := &heartbeat.Sender{
		URL:       be.srv.URL,
		Token:     token,
		Version:   "1.2.3",
		Metrics:   fixedMetrics{m: metrics},
		Instances: func(context.Context) ([]*dtma.Instance, error) { return list, nil },
	}
	if err := s.Send(context.Background()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := be.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	assertJSON(t, reqs[0].body, `{
	  "dtma_version": "1.2.3",
	  "system_status": {
	    "cpu_load_percent": 12.5,
	    "memory": {"total_bytes": 1000, "used_bytes": 600, "free_bytes": 400},
	    "disk": {"mount": "/", "total_bytes": 5000, "used_bytes": 1000, "free_bytes": 4000}
	  },
	  "tool_statuses": [
	    {"account_tool_instance_id": "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10", "status_on_toolbox": "running"},
	    {"account_tool_instance_id": "11111111-2222-3333-4444-555555555555", "status_on_toolbox": "error"},
	    {"account_tool_instance_id": "22222222-2222-3333-4444-555555555555", "status_on_toolbox": "deploying"}
	  ]
	}`)
}

func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body = %s\nwant %s", got, want)
	}
}

func TestSend_NoInstancesNoMetrics(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusOK) // 200 is success too
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token, Version: "v"}
	if err := s.Send(context.Background()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := be.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	assertJSON(t, reqs[0].body, `{"dtma_version": "v", "tool_statuses": [], "system_status": {
	  "cpu_load_percent": 0,
	  "memory": {"total_bytes": 0, "used_bytes": 0, "free_bytes": 0},
	  "disk": {"mount": "", "total_bytes": 0, "used_bytes": 0, "free_bytes": 0}}}`)
}

func TestSend_RealMetrics(t *testing.T) {
	t.Parallel()
	be := newBackend(t, 0)
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token, Metrics: procfs.Source{}}
	if err := s.Send(context.Background()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var body heartbeat.Body
	if err := json.Unmarshal(be.requests()[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body.SystemStatus.Memory.TotalBytes == 0 || body.SystemStatus.Disk.TotalBytes == 0 || body.SystemStatus.Disk.Mount != "/" {
		t.Errorf("system_status = %+v, want real memory and disk of /", body.SystemStatus)
	}
}

func TestSend_Unauthorized(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusUnauthorized)
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token}
	err := s.Send(context.Background())
	if err == nil {
		t.Fatal("Send: no error on 401")
	}
	if got := dtma.ErrorCode(err); got != dtma.EUNAUTHORIZED {
		t.Errorf("code = %q, want %q", got, dtma.EUNAUTHORIZED)
	}
	var se *heartbeat.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Errorf("err = %v, want a StatusError 401", err)
	}
	if !strings.Contains(err.Error(), "401") {
		t.Errorf("error %q does not name the status", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error carries the token: %q", err)
	}
}

func TestSend_ServerError(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusInternalServerError)
	err := (&heartbeat.Sender{URL: be.srv.URL, Token: token}).Send(context.Background())
	if got := dtma.ErrorCode(err); got != dtma.EUNAVAILABLE || !strings.Contains(err.Error(), "500") {
		t.Errorf("err = %v (code %q), want EUNAVAILABLE naming 500", err, got)
	}
}

func TestSend_Unreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	err := (&heartbeat.Sender{URL: url, Token: token}).Send(context.Background())
	if got := dtma.ErrorCode(err); got != dtma.EUNAVAILABLE {
		t.Errorf("err = %v (code %q), want EUNAVAILABLE", err, got)
	}
}

func TestSend_Timeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	s := &heartbeat.Sender{URL: srv.URL, Token: token, Timeout: 50 * time.Millisecond}
	err := s.Send(context.Background())
	if got := dtma.ErrorCode(err); got != dtma.EUNAVAILABLE {
		t.Errorf("err = %v (code %q), want EUNAVAILABLE after the timeout", err, got)
	}
}

func TestSend_NotConfigured(t *testing.T) {
	t.Parallel()
	be := newBackend(t, 0)
	for _, s := range []*heartbeat.Sender{{URL: be.srv.URL}, {Token: token}} {
		if got := dtma.ErrorCode(s.Send(context.Background())); got != dtma.EINVALID {
			t.Errorf("Send with URL %q token set %v: code %q, want %q", s.URL, s.Token != "", got, dtma.EINVALID)
		}
	}
	if n := len(be.requests()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
}

func TestSend_PartialStillPosts(t *testing.T) {
	t.Parallel()
	be := newBackend(t, 0)
	s := &heartbeat.Sender{
		URL:       be.srv.URL,
		Token:     token,
		Metrics:   fixedMetrics{m: metrics},
		Instances: func(context.Context) ([]*dtma.Instance, error) { return nil, errors.New("registry down") },
	}
	err := s.Send(context.Background())
	if err == nil || !strings.Contains(err.Error(), "registry down") {
		t.Errorf("Send = %v, want an error saying the instances were left out", err)
	}
	reqs := be.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1 (the agent is alive even without its instances)", len(reqs))
	}
	var body heartbeat.Body
	if err := json.Unmarshal(reqs[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ToolStatuses == nil || len(body.ToolStatuses) != 0 || body.SystemStatus != metrics {
		t.Errorf("body = %s, want metrics and an empty tool_statuses list", reqs[0].body)
	}
}

func TestRun_Interval(t *testing.T) {
	t.Parallel()
	be := newBackend(t, 0)
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token, Interval: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	be.waitHits(t, 3)
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	n := len(be.requests())
	// Nothing is sent once Run has returned.
	time.Sleep(100 * time.Millisecond)
	if m := len(be.requests()); m != n {
		t.Errorf("%d heartbeats after Run returned", m-n)
	}
}

func TestRun_FirstAtOnce(t *testing.T) {
	t.Parallel()
	be := newBackend(t, 0)
	// An hour-long interval: the only heartbeat possible is the one at start.
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	be.waitHits(t, 1)
	cancel()
	<-done
	if n := len(be.requests()); n != 1 {
		t.Errorf("%d heartbeats, want 1", n)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun_LogsFailures(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusUnauthorized)
	var logs syncBuffer
	s := &heartbeat.Sender{
		URL:      be.srv.URL,
		Token:    token,
		Interval: 20 * time.Millisecond,
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	be.waitHits(t, 2) // Run kept going after a failure
	// The second request arrives after the first failure was logged.
	cancel()
	<-done
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "status=401") || !strings.Contains(out, "DTMA_BEARER_TOKEN") {
		t.Errorf("log = %q, want an error with status=401 naming DTMA_BEARER_TOKEN as the likely cause", out)
	}
	if strings.Contains(out, token) {
		t.Errorf("log carries the token: %q", out)
	}
}

// TestStatusOnToolbox: every state gives a word of the backend's enum
// (dtma's TestBackendWords holds the full table).
func TestStatusOnToolbox(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status dtma.Status
		docker dtma.DockerState
		want   string
	}{
		{dtma.StatusRunning, dtma.DockerRunning, "running"},
		{dtma.StatusStopped, dtma.DockerExited, "stopped"},
		{dtma.StatusDeploying, dtma.DockerUnknown, "deploying"},
		{dtma.StatusStarting, dtma.DockerCreated, "starting"},
		{dtma.StatusRestarting, dtma.DockerRunning, "starting"},
		{dtma.StatusStopping, dtma.DockerRunning, "stopping"},
		{dtma.StatusRemoving, dtma.DockerRunning, "deleting"},
		{dtma.StatusCrashLoop, dtma.DockerRestarting, "error"},
		{dtma.StatusError, dtma.DockerMissing, "error"},
		{dtma.StatusMissing, dtma.DockerMissing, "error"},
		{"", dtma.DockerExited, "stopped"},
		{"", dtma.DockerRunning, "running"},
		{"", dtma.DockerUnknown, "error"},
	} {
		inst := &dtma.Instance{Status: tc.status, Observed: dtma.Observed{DockerStatus: tc.docker}}
		if got := heartbeat.StatusOnToolbox(inst); got != tc.want {
			t.Errorf("StatusOnToolbox(status %q, docker %q) = %q, want %q", tc.status, tc.docker, got, tc.want)
		}
	}
}

// TestRun_RetriesWithBackoff: after a failure the next heartbeat comes after
// RetryMin, not after the (hour-long) interval; once the backend accepts,
// the interval applies again.
func TestRun_RetriesWithBackoff(t *testing.T) {
	t.Parallel()
	be := newBackend(t, http.StatusUnauthorized)
	s := &heartbeat.Sender{URL: be.srv.URL, Token: token, Interval: time.Hour, RetryMin: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	be.waitHits(t, 3) // two retries although the interval is an hour
	cancel()
	<-done
}
