package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cli runs the dtma binary with args against agent a (dtmaCLI with the
// agent's environment, its URL and the token).
func cli(t *testing.T, a *Agent, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return dtmaCLI(t, cliEnv(a), args...)
}

// cliEnv is the agent's environment plus the client's URL and token.
func cliEnv(a *Agent) []string {
	return append(a.Env(), "DTMA_URL="+a.URL, "DTMA_TOKEN="+Token)
}

// TestCLIEveryCommand drives the real binary against the real agent for
// every instance command: deploy, ls, inspect, stop, start, restart, logs
// (also -f ended with SIGINT), rm, version, doctor and the usage and agent
// errors with their exit codes.
func TestCLIEveryCommand(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	img := EchoImage(t)
	name := "cli tool " + uniqueSuffix()
	port := freePort(t)

	out, errOut, code := cli(t, a, "deploy", img, "--name", name, "-e", "ECHO=hello-cli", "-e", "SECRET=s3cr3t-value",
		"-p", "127.0.0.1:"+strconv.Itoa(port)+":8080", "--pull", "never", "-q")
	if code != 0 || out != name+"\n" || !strings.Contains(errOut, "created") {
		t.Fatalf("deploy: exit %d, out %q, err %q", code, out, errOut)
	}
	Eventually(t, 15*time.Second, "the tool answering", func() bool { return HTTPGet(port, "/") == "hello-cli" })
	// Again: idempotent, exit 0.
	if _, errOut, code := cli(t, a, "deploy", img, "--name", name, "-e", "ECHO=hello-cli", "-e", "SECRET=s3cr3t-value",
		"-p", "127.0.0.1:"+strconv.Itoa(port)+":8080", "--pull", "never", "-q"); code != 0 || !strings.Contains(errOut, "exists") {
		t.Errorf("re-deploy: exit %d, %q", code, errOut)
	}

	out, _, code = cli(t, a, "ls")
	if code != 0 || !strings.Contains(out, name) || !strings.Contains(out, "127.0.0.1:"+strconv.Itoa(port)+"->8080/tcp") {
		t.Errorf("ls: exit %d\n%s", code, out)
	}
	out, _, _ = cli(t, a, "inspect", name, "--format", "{{.DTMAStatus}} {{.DockerStatus}} {{json .Env}}")
	if out != `running running ["ECHO","SECRET"]`+"\n" {
		t.Errorf("inspect --format: %q", out)
	}
	out, _, _ = cli(t, a, "inspect", name)
	if strings.Contains(out, "s3cr3t-value") || !strings.Contains(out, `"container_id"`) {
		t.Errorf("inspect shows an env value or no container id:\n%s", out)
	}
	id := a.Client()
	inst, err := id.Instance(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	cid := inst.ContainerID

	if out, _, code := cli(t, a, "stop", "-t", "2", name); code != 0 || out != name+"\n" {
		t.Errorf("stop: exit %d %q", code, out)
	}
	if ins := a.Inspect(cid); ins == nil || ins.Container.State.Running {
		t.Errorf("stop: the container still runs")
	}
	if _, errOut, code := cli(t, a, "stop", name); code != 0 || !strings.Contains(errOut, name+": ") {
		t.Errorf("second stop: exit %d, stderr %q (want the agent's unchanged message)", code, errOut)
	}
	if _, _, code := cli(t, a, "start", name); code != 0 {
		t.Errorf("start: exit %d", code)
	}
	Eventually(t, 15*time.Second, "the tool answering after start", func() bool { return HTTPGet(port, "/") == "hello-cli" })
	before := startedAt(t, a, cid)
	if _, _, code := cli(t, a, "restart", name); code != 0 {
		t.Errorf("restart: exit %d", code)
	}
	if after := startedAt(t, a, cid); after == before {
		t.Errorf("restart: StartedAt unchanged (%s)", after)
	}
	Eventually(t, 15*time.Second, "the tool answering after restart", func() bool { return HTTPGet(port, "/") == "hello-cli" })

	out, _, code = cli(t, a, "logs", "--tail", "50", name)
	if code != 0 || !strings.Contains(out, "listening on") {
		t.Errorf("logs --tail: exit %d\n%s", code, out)
	}

	// logs -f streams new output until SIGINT, then exits 0.
	follow := exec.Command(binPath, "logs", "-f", "--tail", "0", name)
	follow.Env = cliEnv(a)
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ferr bytes.Buffer
	follow.Stderr = &ferr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	marker := "/follow-" + uniqueSuffix()
	seen := false
	deadline := time.After(30 * time.Second)
	for !seen {
		HTTPGet(port, marker) // logged by the tool as "request GET <marker>"
		select {
		case l := <-lines:
			seen = strings.Contains(l, marker)
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			follow.Process.Kill()
			t.Fatalf("logs -f never showed %s; stderr %q", marker, ferr.String())
		}
	}
	_ = follow.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- follow.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs -f after SIGINT: %v (stderr %q), want exit 0", err, ferr.String())
		}
	case <-time.After(30 * time.Second):
		follow.Process.Kill()
		t.Fatal("logs -f did not end within 30s of SIGINT")
	}

	out, _, code = cli(t, a, "version")
	if code != 0 || !strings.Contains(out, "client: dev") || !strings.Contains(out, "agent:  dev (host "+a.HostID+")") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	out, _, _ = cli(t, a, "doctor")
	for _, want := range []string{"ok    docker", "ok    registry", "ok    token"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor lacks %q:\n%s", want, out)
		}
	}

	// Errors: the agent's code and message, exit 1; usage, exit 2.
	if _, errOut, code := cli(t, a, "inspect", "no-such-"+uniqueSuffix()); code != 1 || !strings.Contains(errOut, "not_found (404)") {
		t.Errorf("inspect unknown: exit %d, %q", code, errOut)
	}
	if _, errOut, code := cli(t, a, "deploy", img, "--name", "bad/name"); code != 1 || !strings.Contains(errOut, "invalid (400): name") {
		t.Errorf("deploy with a bad name: exit %d, %q", code, errOut)
	}
	if _, _, code := cli(t, a, "deploy", img); code != 2 {
		t.Errorf("deploy without --name: exit %d, want 2", code)
	}
	if _, _, code := cli(t, a, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}

	// rm without -f refuses a running instance; rm -f removes it.
	if _, errOut, code := cli(t, a, "rm", name); code != 1 || !strings.Contains(errOut, "rm -f") {
		t.Errorf("rm of a running instance: exit %d, %q", code, errOut)
	}
	if a.Inspect(cid) == nil {
		t.Fatal("rm without -f removed the container")
	}
	if out, _, code := cli(t, a, "rm", "-f", name); code != 0 || out != name+"\n" {
		t.Errorf("rm -f: exit %d %q", code, out)
	}
	if a.Inspect(cid) != nil {
		t.Error("rm -f left the container")
	}
	if out, _, _ := cli(t, a, "ls", "-q"); strings.Contains(out, name) {
		t.Errorf("ls after rm: %q", out)
	}
	if strings.Contains(a.Logs(), "s3cr3t-value") {
		t.Error("the agent logged an env value")
	}
}
