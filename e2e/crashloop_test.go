package e2e

import (
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
)

// TestCrashLoop deploys a tool that exits with code 3 after 300 ms; Docker
// restarts it (unless-stopped) and, after DTMA_CRASHLOOP_RESTARTS restarts
// within the window, the instance shows dtma_status crashloop with the
// last exit code and the restart count, on v1 and in the legacy status —
// also while Docker has it running again between two crashes, and after
// the agent restarts.
func TestCrashLoop(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_CRASHLOOP_RESTARTS=3", "DTMA_CRASHLOOP_WINDOW=2m"}})
	r := a.Expect(201, "POST", "/v1/instances", rcDeployBody(img, "Crashy Tool", "", map[string]string{"EXIT_AFTER_MS": "300", "EXIT_CODE": "3"}))
	var first dtmahttp.Instance
	r.Decode(t, &first)

	var got dtmahttp.Instance
	Eventually(t, 90*time.Second, "dtma_status crashloop", func() bool {
		got = rcMustGet(t, a, "Crashy Tool")
		return got.DTMAStatus == "crashloop"
	})
	if got.ExitCode != 3 || got.RestartCount < 3 {
		t.Fatalf("crashloop shows exit_code %d, restart_count %d; want 3 and >= 3\n%+v", got.ExitCode, got.RestartCount, got)
	}
	if got.ContainerID != first.ContainerID || got.DesiredState != "running" {
		t.Fatalf("crash-looping instance: %+v", got)
	}

	// Between crashes Docker shows the container running (and resets its
	// exit code); the instance still shows crashloop with the last exit
	// code, on both faces.
	sawRunning := false
	Eventually(t, 90*time.Second, "the crash-looping container seen running again", func() bool {
		got = rcMustGet(t, a, "Crashy Tool")
		if got.DTMAStatus != "crashloop" || got.ExitCode != 3 {
			t.Fatalf("crash-looping instance shows dtma_status %s, exit_code %d (docker_status %s, restart_count %d)",
				got.DTMAStatus, got.ExitCode, got.DockerStatus, got.RestartCount)
		}
		lt := rcLegacyTool(t, a, "Crashy Tool")
		if lt["dtma_status"] != "crashloop" || lt["exit_code"] != float64(3) {
			t.Fatalf("legacy status of the crash-looping instance: %v", lt)
		}
		if got.DockerStatus == "running" {
			sawRunning = true
		}
		return sawRunning && got.RestartCount >= 4
	})
	lt := rcLegacyTool(t, a, "Crashy Tool")
	if rc, _ := lt["restart_count"].(float64); rc < 3 {
		t.Fatalf("legacy restart_count %v", lt["restart_count"])
	}

	// The agent's restart forgets nothing: right after its first
	// reconcile the instance still shows crashloop (Docker's restart
	// backoff has grown to seconds by now, so new restarts alone would
	// take a while to say so again).
	since := time.Now()
	a.Restart()
	waitRelist(t, a, since)
	if got = rcMustGet(t, a, "Crashy Tool"); got.DTMAStatus != "crashloop" {
		t.Fatalf("after an agent restart the crash-looping instance shows %s (docker_status %s)", got.DTMAStatus, got.DockerStatus)
	}
}
