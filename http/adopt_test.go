package http

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// adoptCounter counts the adoptions that reach the service.
type adoptCounter struct {
	dtma.InstanceService
	calls int
}

func (a *adoptCounter) AdoptContainer(context.Context, dtma.AdoptRequest) (*dtma.AdoptResult, error) {
	a.calls++
	return &dtma.AdoptResult{Action: "skip", Reason: "test"}, nil
}

// POST /v1/adopt is served as DTMA_ADOPT says: by default to loopback peers
// only; off refuses everyone; any serves every token holder. A refusal is a
// 403 forbidden that says how to enable it, and never reaches the service.
func TestAdoptPolicy(t *testing.T) {
	for _, tt := range []struct {
		policy AdoptPolicy
		remote string
		want   int
	}{
		{"", "127.0.0.1:5000", 200},
		{"", "[::1]:5000", 200},
		{"", "203.0.113.7:5000", 403},
		{"", "10.0.0.2:5000", 403},
		{AdoptLoopback, "203.0.113.7:5000", 403},
		{AdoptOff, "127.0.0.1:5000", 403},
		{AdoptAny, "203.0.113.7:5000", 200},
	} {
		svc := &adoptCounter{}
		h := (&Server{Service: svc, Tokens: []string{"unit-token"}, Adopt: tt.policy}).Handler()
		req := httptest.NewRequest("POST", "/v1/adopt", strings.NewReader(`{"name":"x","image":"img:1"}`))
		req.RemoteAddr = tt.remote
		req.Header.Set("Authorization", "Bearer unit-token")
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("policy %q from %s: status %d, want %d (%s)", tt.policy, tt.remote, rec.Code, tt.want, rec.Body)
			continue
		}
		if tt.want == http.StatusForbidden {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if e.Error.Code != "forbidden" || !strings.Contains(e.Error.Message, "DTMA_ADOPT") {
				t.Errorf("policy %q from %s: error %+v, want forbidden naming DTMA_ADOPT", tt.policy, tt.remote, e.Error)
			}
			if svc.calls != 0 {
				t.Errorf("policy %q from %s: the refused adoption reached the service", tt.policy, tt.remote)
			}
		}
	}
}
