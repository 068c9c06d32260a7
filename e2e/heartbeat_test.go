package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHeartbeat: the agent posts the legacy heartbeat to the backend with
// its token, reporting its instances by account id, and never an env value.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	var mu sync.Mutex
	var bodies []string
	var auths []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/functions/v1/heartbeat" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer backend.Close()

	a := StartAgent(t, AgentOptions{Env: []string{
		"AGENTOPIA_API_BASE_URL=" + backend.URL + "/functions/v1",
		"DTMA_HEARTBEAT_INTERVAL=1s",
	}})
	const acct = "0b6c3a52-9d0e-4c1f-8a55-2f5f6f0e7a11"
	a.Expect(201, "POST", "/v1/instances", map[string]any{"name": "hb tool", "account_tool_instance_id": acct,
		"image": img, "env": map[string]string{"SECRET": "hb-secret-value-77"}})

	var found map[string]any
	Eventually(t, 30*time.Second, "a heartbeat reporting the instance running", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bodies {
			var hb struct {
				Version string           `json:"dtma_version"`
				System  map[string]any   `json:"system_status"`
				Tools   []map[string]any `json:"tool_statuses"`
			}
			if json.Unmarshal([]byte(b), &hb) != nil || hb.System == nil {
				continue
			}
			for _, ts := range hb.Tools {
				if ts["account_tool_instance_id"] == acct && ts["status_on_toolbox"] == "running" {
					found = ts
					return true
				}
			}
		}
		return false
	})
	// runtime_details are sent only with DTMA_HEARTBEAT_RUNTIME_DETAILS=true
	// (the 2025 backend dropped the column).
	if _, has := found["runtime_details"]; has {
		t.Errorf("runtime_details sent by default: %v", found)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, b := range bodies {
		if strings.Contains(b, "hb-secret-value-77") {
			t.Fatalf("heartbeat %d carries an env value", i)
		}
		if auths[i] != "Bearer "+Token {
			t.Fatalf("heartbeat %d Authorization %q", i, auths[i])
		}
	}
}
