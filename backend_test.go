package dtma

import (
	"testing"

	"github.com/agentopia/dtma/internal/backendtest"
)

func TestBackendWords(t *testing.T) {
	tests := []struct {
		name      string
		status    Status
		docker    DockerState
		backend   string // what the backend shows after its /status mapping
		heartbeat string // what it stores from the heartbeat
	}{
		{"deploy in progress", StatusDeploying, DockerMissing, "deploying", "deploying"},
		{"start in progress", StatusStarting, DockerExited, "deploying", "starting"},
		{"restart in progress", StatusRestarting, DockerRunning, "deploying", "starting"},
		{"stop in progress", StatusStopping, DockerRunning, "deploying", "stopping"},
		{"remove in progress", StatusRemoving, DockerRunning, "deploying", "deleting"},
		{"running", StatusRunning, DockerRunning, "running", "running"},
		{"paused", StatusRunning, DockerPaused, "running", "running"},
		{"docker restarting it", StatusRunning, DockerRestarting, "deploying", "starting"},
		{"stopped", StatusStopped, DockerExited, "stopped", "stopped"},
		{"created, never started", StatusStopped, DockerCreated, "stopped", "stopped"},
		{"dead", StatusStopped, DockerDead, "error", "error"},
		{"crash loop", StatusCrashLoop, DockerRestarting, "error", "error"},
		{"failed operation", StatusError, DockerExited, "error", "error"},
		{"vanished", StatusMissing, DockerMissing, "error", "error"},
		{"no status yet, running", "", DockerRunning, "running", "running"},
		{"no status yet, exited", "", DockerExited, "stopped", "stopped"},
		{"never observed", "", DockerUnknown, "error", "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := &Instance{Status: tt.status, Observed: Observed{DockerStatus: tt.docker}}
			b := BackendStatus(inst)
			if got := backendtest.MapStatus(b); got != tt.backend {
				t.Errorf("BackendStatus = %q, which the backend shows as %q; want %q", b, got, tt.backend)
			}
			if !backendtest.InEnum(b) {
				t.Errorf("BackendStatus = %q is not a word of the backend's enum", b)
			}
			h := HeartbeatStatus(inst)
			if h != tt.heartbeat {
				t.Errorf("HeartbeatStatus = %q, want %q", h, tt.heartbeat)
			}
			if !backendtest.InEnum(h) {
				t.Errorf("HeartbeatStatus = %q is not a word of the backend's enum", h)
			}
		})
	}
}

// TestBackendWordsHealth: a running tool that fails its health check is
// not reported as plain running.
func TestBackendWordsHealth(t *testing.T) {
	for _, tt := range []struct {
		name               string
		status             Status
		docker             DockerState
		health             HealthState
		backend, heartbeat string
	}{
		{"running, healthy", StatusRunning, DockerRunning, HealthHealthy, "running", "running"},
		{"running, no check", StatusRunning, DockerRunning, HealthUnknown, "running", "running"},
		{"running, unhealthy", StatusRunning, DockerRunning, HealthUnhealthy, "error", "error_runtime"},
		{"running, check starting", StatusRunning, DockerRunning, HealthStarting, "running", "running"},
		{"docker restarting it, unhealthy", StatusRunning, DockerRestarting, HealthUnhealthy, "deploying", "starting"},
		{"stopped, unhealthy left over", StatusStopped, DockerExited, HealthUnhealthy, "stopped", "stopped"},
	} {
		inst := &Instance{Status: tt.status, Observed: Observed{DockerStatus: tt.docker}, Health: HealthStatus{State: tt.health}}
		b, h := BackendStatus(inst), HeartbeatStatus(inst)
		if got := backendtest.MapStatus(b); got != tt.backend || !backendtest.InEnum(b) {
			t.Errorf("%s: BackendStatus = %q, shown as %q; want %q", tt.name, b, got, tt.backend)
		}
		if h != tt.heartbeat || !backendtest.InEnum(h) {
			t.Errorf("%s: HeartbeatStatus = %q, want %q", tt.name, h, tt.heartbeat)
		}
	}
}
