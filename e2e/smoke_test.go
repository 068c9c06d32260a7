package e2e

import (
	"testing"
)

// TestSmoke deploys through the v1 API, reaches the container over its
// published port and removes it.
func TestSmoke(t *testing.T) {
	t.Parallel()
	img := EchoImage(t)
	a := StartAgent(t, AgentOptions{})
	port := freePort(t)
	r := a.Expect(201, "POST", "/v1/instances", map[string]any{
		"name": "smoke one", "image": img, "env": map[string]string{"ECHO": "smoke-ok"},
		"ports": []map[string]any{{"container_port": 8080, "host_port": port}},
	})
	inst := r.JSON(t)
	if inst["dtma_status"] != "running" || inst["docker_status"] != "running" {
		t.Fatalf("deploy answered %s", r.Body)
	}
	Eventually(t, 10e9, "echo answer", func() bool { return HTTPGet(port, "/") == "smoke-ok" })
	a.Expect(204, "DELETE", "/v1/instances/smoke%20one", nil)
	if n := len(a.HostContainers()); n != 0 {
		t.Fatalf("%d containers left after delete", n)
	}
}
