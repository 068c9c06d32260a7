package http

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// removeService answers RemoveInstance: ENOTFOUND for "ghost", ok else.
type removeService struct{ fakeService }

func (f *removeService) RemoveInstance(_ context.Context, ref string) error {
	if ref == "ghost" {
		return dtma.Errorf(dtma.ENOTFOUND, "no instance %q", ref)
	}
	return nil
}

func TestAuditLine(t *testing.T) {
	const token = "s3cret-token-value-0123456789"
	var logs lockedBuffer
	s := &Server{Service: &removeService{}, Tokens: []string{token}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	h := s.Handler()
	do := func(method, path, tok, reqID string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if reqID != "" {
			req.Header.Set(RequestIDHeader, reqID)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	ok := do("DELETE", "/v1/instances/tool-a", token, "")
	missing := do("DELETE", "/v1/instances/ghost", token, "proxy-id.1")
	wrong := do("DELETE", "/v1/instances/tool-a", "wrong", "bad id with spaces")
	do("GET", "/v1/instances/tool-a", token, "") // a read: no audit line

	if ok.Header().Get(RequestIDHeader) == "" || missing.Header().Get(RequestIDHeader) != "proxy-id.1" {
		t.Fatalf("request ids: %q %q", ok.Header().Get(RequestIDHeader), missing.Header().Get(RequestIDHeader))
	}
	if id := wrong.Header().Get(RequestIDHeader); id == "" || strings.Contains(id, " ") {
		t.Fatalf("an unsafe client id was kept: %q", id)
	}
	var audits []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "audit" {
			audits = append(audits, m)
		}
	}
	if len(audits) != 3 {
		t.Fatalf("%d audit lines, want 3:\n%s", len(audits), logs.b.String())
	}
	fp := tokenFingerprint(token)
	for i, want := range []struct{ id, who, ref, outcome string }{
		{ok.Header().Get(RequestIDHeader), fp, "tool-a", "ok"},
		{"proxy-id.1", fp, "ghost", "rejected"},
		{wrong.Header().Get(RequestIDHeader), "unauthenticated", "tool-a", "refused"},
	} {
		a := audits[i]
		if a["request_id"] != want.id || a["who"] != want.who || a["ref"] != want.ref || a["outcome"] != want.outcome || a["action"] != "DELETE /v1/instances/{ref}" {
			t.Errorf("audit %d = %v, want %+v", i, a, want)
		}
	}
	if strings.Contains(logs.b.String(), token) || strings.Contains(logs.b.String(), "wrong") {
		t.Error("a token reached the log")
	}
}
