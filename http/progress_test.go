package http

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// deployService answers Deploy after sending progress through the
// request's pull options, recording the credential it was given.
type deployService struct {
	dtma.InstanceService
	progress []dtma.PullProgress
	err      error
	gotAuth  *dtma.RegistryAuth
}

func (d *deployService) Deploy(ctx context.Context, req dtma.DeployRequest) (*dtma.Instance, bool, error) {
	o := dtma.PullOptionsFrom(ctx)
	d.gotAuth = o.Auth
	for _, p := range d.progress {
		if o.Progress != nil {
			o.Progress(p)
		}
	}
	if d.err != nil {
		return nil, false, d.err
	}
	return &dtma.Instance{ID: "11111111-1111-4111-8111-111111111111", Name: req.Name, Spec: req.Spec, Status: dtma.StatusRunning}, true, nil
}

func deployRec(t *testing.T, svc dtma.InstanceService, accept, body string) *httptest.ResponseRecorder {
	t.Helper()
	s := &Server{Service: svc, Tokens: []string{"tok"}, Version: "t"}
	req := httptest.NewRequest("POST", "/v1/instances", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func TestDeployNDJSON(t *testing.T) {
	prog := []dtma.PullProgress{{ID: "v1", Status: "Pulling from x"}, {ID: "abc", Status: "Downloading", Current: 5, Total: 10}}
	body := `{"name":"a","image":"127.0.0.1:5000/x:1","registry_auth":{"username":"u","password":"p4ss"}}`

	// Progress lines, then the outcome.
	svc := &deployService{progress: prog}
	rec := deployRec(t, svc, "application/x-ndjson", body)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, type %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var evs []DeployEvent
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		var ev DeployEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Progress == nil || *evs[1].Progress != prog[1] || evs[2].Instance == nil || evs[2].Status != 201 || !evs[2].Created {
		t.Fatalf("events %+v", evs)
	}
	if svc.gotAuth == nil || svc.gotAuth.Username != "u" || svc.gotAuth.Password != "p4ss" {
		t.Errorf("the service got credential %v", svc.gotAuth)
	}
	if strings.Contains(rec.Body.String(), "p4ss") {
		t.Error("the answer shows the password")
	}

	// A failure after progress is the last line, with its status.
	svc = &deployService{progress: prog, err: dtma.FieldErrorf(dtma.EINVALID, "registry_auth", "image x cannot be pulled: registry 127.0.0.1:5000 refused access")}
	rec = deployRec(t, svc, "application/x-ndjson", body)
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	var last DeployEvent
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if len(lines) != 3 || last.Error == nil || last.Status != 400 || last.Error.Field != "registry_auth" || !strings.Contains(last.Error.Message, "127.0.0.1:5000") {
		t.Errorf("failure stream %q", rec.Body.String())
	}

	// No progress (nothing pulled): the plain answer; without the Accept
	// header too, and the legacy shape stays one object.
	rec = deployRec(t, &deployService{}, "application/x-ndjson", body)
	if rec.Code != 201 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Errorf("no progress: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	rec = deployRec(t, &deployService{progress: prog}, "", body)
	if rec.Code != 201 || strings.Count(strings.TrimSpace(rec.Body.String()), "\n") != 0 {
		t.Errorf("without Accept: %d %q", rec.Code, rec.Body.String())
	}
}

func TestDeployRegistryAuthValidation(t *testing.T) {
	for body, field := range map[string]string{
		`{"name":"a","image":"x","registry_auth":{"username":"u"}}`:                                     "registry_auth.password",
		`{"name":"a","image":"x","registry_auth":{"password":"p"}}`:                                     "registry_auth.username",
		`{"name":"a","image":"x","registry_auth":{"username":"u","password":"p","identity_token":"t"}}`: "registry_auth.identity_token",
		`{"name":"a","image":"x","registry_auth":{"username":"u","pass":"p"}}`:                          "pass", // the decoder names unknown nested fields by their own name
	} {
		svc := &deployService{}
		rec := deployRec(t, svc, "", body)
		var eb ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &eb)
		if rec.Code != http.StatusBadRequest || eb.Error.Field != field {
			t.Errorf("%s: %d %s, want 400 on %s", body, rec.Code, rec.Body, field)
		}
		if strings.Contains(rec.Body.String(), `"p"`) {
			t.Errorf("%s: the answer echoes the password", body)
		}
	}
}
