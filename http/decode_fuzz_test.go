package http

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// Fuzz targets for the HTTP faces: the v1 and legacy deploy decoders
// (legacy PortBindings included) and any request at all. Seeds are below
// and in testdata/fuzz/<FuzzName>/; `.ci/fuzz` runs each target for a
// few seconds.

// fuzzService validates deploys the way the agent does (Normalize, then
// Validate) and finds nothing else; it never touches Docker.
type fuzzService struct{ dtma.InstanceService }

func (fuzzService) Deploy(_ context.Context, req dtma.DeployRequest) (*dtma.Instance, bool, error) {
	req.Normalize()
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	return &dtma.Instance{ID: dtma.NewUUID(), Name: req.Name, AccountToolInstanceID: req.AccountToolInstanceID, Spec: req.Spec,
		ContainerName: dtma.ContainerName(req.Name), CreatedAt: time.Unix(0, 0)}, true, nil
}
func (fuzzService) FindInstance(_ context.Context, ref string) (*dtma.Instance, error) {
	return nil, dtma.Errorf(dtma.ENOTFOUND, "no instance %q on this host", ref)
}
func (fuzzService) ListInstances(context.Context) ([]*dtma.Instance, error) { return nil, nil }
func (fuzzService) ListFleet(context.Context) ([]*dtma.Instance, error)     { return nil, nil }
func (s fuzzService) StartInstance(ctx context.Context, ref string) (*dtma.Instance, bool, error) {
	_, err := s.FindInstance(ctx, ref)
	return nil, false, err
}
func (s fuzzService) StopInstance(ctx context.Context, ref string, _ time.Duration) (*dtma.Instance, bool, error) {
	_, err := s.FindInstance(ctx, ref)
	return nil, false, err
}
func (s fuzzService) RestartInstance(ctx context.Context, ref string) (*dtma.Instance, error) {
	return s.FindInstance(ctx, ref)
}
func (s fuzzService) RemoveInstance(ctx context.Context, ref string) error {
	_, err := s.FindInstance(ctx, ref)
	return err
}
func (s fuzzService) InstanceLogs(ctx context.Context, ref string, _ dtma.LogOptions) (io.ReadCloser, error) {
	_, err := s.FindInstance(ctx, ref)
	return nil, err
}
func (fuzzService) AdoptContainer(_ context.Context, req dtma.AdoptRequest) (*dtma.AdoptResult, error) {
	if err := dtma.ValidateName(req.Name); err != nil {
		return nil, err
	}
	return &dtma.AdoptResult{Action: "skip", Reason: "no such container"}, nil
}
func (fuzzService) Health(context.Context) dtma.Health {
	return dtma.Health{Version: "f", HostID: "h", DockerOK: true, RegistryOK: true}
}

func fuzzServer() http.Handler {
	return (&Server{Service: fuzzService{}, Tokens: []string{"tok"}, AuthFailureLimit: -1}).Handler()
}

// checkAnswer fails unless the answer to a client's input is a 2xx/3xx or
// a 4xx with a JSON error body (a field named for a 400 on v1): never a
// 5xx, never a panic (the recover middleware would turn it into a 500).
func checkAnswer(t *testing.T, method, path string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%.80q %.200q: status %d %s", method, path, rec.Code, rec.Body)
	}
	if rec.Code < 400 || method == "HEAD" {
		return
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%.80q %.200q: %d with a body that is not JSON: %q", method, path, rec.Code, rec.Body)
	}
	if e, ok := body["error"].(map[string]any); ok {
		if e["code"] == "" || e["message"] == "" || (rec.Code == 400 && e["field"] == nil) {
			t.Fatalf("%.200q: v1 error without code, message or field: %s", path, rec.Body)
		}
	} else if body["success"] != false || body["message"] == "" {
		t.Fatalf("%.200q: legacy error without success/message: %s", path, rec.Body)
	}
}

func postBody(h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// FuzzV1DeployBody: any body for POST /v1/instances is a 201 or a 400
// naming a field.
func FuzzV1DeployBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"weather","image":"ghcr.io/example/weather-mcp:2","env":{"TOKEN":"x"},"ports":[{"container_port":8080,"host_port":0}]}`,
		`{"name":"a","image":"x","ports":[{"container_port":70000,"protocol":"sctp","host_ip":"::1"}],"pull_policy":"never"}`,
		`{"name":"a","image":"x","env":{"":"v","A B":"c"},"unknown":1}`,
		`{"name":"\u0000","image":"UPPER/case","account_tool_instance_id":"not-a-uuid"}`,
		`{"name":1}`, `[]`, `{}{}`, ``, `null`, `{"ports":[null]}`,
	} {
		f.Add([]byte(s))
	}
	h := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := postBody(h, "/v1/instances", body)
		if rec.Code != 201 && rec.Code != 400 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		checkAnswer(t, "POST", "/v1/instances", rec)
	})
}

// FuzzLegacyDeployBody: any body for POST /tools — the backend's shape
// with Env as NAME=value lines and Docker's PortBindings — is a 201 or a
// 400 in the legacy envelope.
func FuzzLegacyDeployBody(f *testing.F) {
	for _, s := range []string{
		`{"dockerImageUrl":"ghcr.io/example/mcp-server:1.2.0","instanceNameOnToolbox":"Context7 MCP Server-1750278276605","accountToolInstanceId":"6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10","baseConfigOverrideJson":{"Env":["API_KEY=abc"],"HostConfig":{"PortBindings":{"8080/tcp":[{"HostPort":"30001"}]}}}}`,
		`{"dockerImageUrl":"x","instanceNameOnToolbox":"n","baseConfigOverrideJson":{"HostConfig":{"PortBindings":{"1/tcp":[{"HostPort":""}],"2/udp":[],"3":null,"4/SCTP":[{"HostIp":" ::1 ","HostPort":" 7 "}]}}}}`,
		`{"dockerImageUrl":"x","instanceNameOnToolbox":"n","baseConfigOverrideJson":{"HostConfig":{"PortBindings":{"x/tcp":[{}],"-1/tcp":[{"HostPort":"99999"}],"8080/":[{}]}}}}`,
		`{"dockerImageUrl":"x","instanceNameOnToolbox":"n","baseConfigOverrideJson":{"Env":["NOEQUALS","=v","A=b=c"],"HostConfig":null}}`,
		`{"baseConfigOverrideJson":{"Privileged":true,"HostConfig":{"Binds":["/:/host"],"CapAdd":["ALL"]}}}`,
		`{"baseConfigOverrideJson":[]}`, `{"dockerImageUrl":5}`,
	} {
		f.Add([]byte(s))
	}
	h := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := postBody(h, "/tools", body)
		if rec.Code != 201 && rec.Code != 400 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		checkAnswer(t, "POST", "/tools", rec)
	})
}

// FuzzRequest: any method, path, query and body, with and without the
// token, is answered without a 5xx; errors are JSON in the face's
// envelope.
func FuzzRequest(f *testing.F) {
	for _, s := range []struct {
		method, path, query string
		body                []byte
		auth                bool
	}{
		{"GET", "/v1/instances/some name", "", nil, true},
		{"POST", "/v1/instances/x/stop", "timeout=-1", nil, true},
		{"GET", "/v1/instances/x/logs", "tail=all&follow=maybe", nil, true},
		{"GET", "/tools/x/logs", "tail=99999999999", nil, true},
		{"PUT", "/v1/instances", "", []byte(`{}`), true},
		{"POST", "/v1/adopt", "", []byte(`{"name":"x","container":"../containers"}`), true},
		{"DELETE", "/tools/%2e%2e", "", nil, true},
		{"GET", "//v1/../metrics", "", nil, false},
		{"M" + strings.Repeat("X", 300), "/tools", "", nil, false},
		{"HEAD", "/v1/openapi.json", "", nil, true},
	} {
		f.Add(s.method, s.path, s.query, s.body, s.auth)
	}
	h := fuzzServer()
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte, auth bool) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") || !strings.HasPrefix(path, "/") {
			return // not a request line net/http would parse
		}
		u := &url.URL{Path: path, RawQuery: query}
		req := &http.Request{Method: method, URL: u, RequestURI: u.RequestURI(), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "dtma", RemoteAddr: "192.0.2.1:1234",
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		req = req.WithContext(context.Background())
		if auth {
			req.Header.Set("Authorization", "Bearer tok")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, method, path, rec)
		if !auth && rec.Code >= 400 && rec.Code != 401 {
			t.Fatalf("%.80q %.200q without a token: %d", method, path, rec.Code)
		}
	})
}
