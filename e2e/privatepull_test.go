package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/testregistry"
)

// TestCLIPrivatePullWithProgress: `dtma deploy` pulls from a registry on
// 127.0.0.1 that requires basic auth. Without a credential and with a
// wrong one the agent answers 400 naming the registry; with the right one
// (from stdin) the CLI prints the pull's progress, line by line as stderr
// is no terminal, and the instance. The password is in no log, label,
// answer or registry file.
func TestCLIPrivatePullWithProgress(t *testing.T) {
	t.Parallel()
	const user, pass = "e2e-user", "e2e-Pa55word-never-shown"
	dc := dockertest.Client(t)
	// Before StartAgent: its cleanup (the containers) must run before the
	// registry's (the pulled image).
	reg := testregistry.New(t, dc, EchoImage(t), "dtma/private-"+strings.ToLower(dockertest.RunID()), "v1")
	reg.RequireBasicAuth(user, pass)
	a := StartAgent(t, AgentOptions{Env: []string{"DTMA_REGISTRY_ALLOW=127.0.0.1"}})
	name := "private-" + uniqueSuffix()

	_, errOut, code := cli(t, a, "deploy", reg.Ref(), "--name", name)
	if code != 1 || !strings.Contains(errOut, "invalid (400): image: ") || !strings.Contains(errOut, "registry "+reg.Host()+" refused access") {
		t.Fatalf("deploy without a credential: exit %d, %q", code, errOut)
	}
	wrong := append(cliEnv(a), "DTMA_REGISTRY_PASSWORD=wrong-"+pass)
	_, errOut, code = dtmaCLI(t, wrong, "deploy", reg.Ref(), "--name", name, "--registry-user", user)
	if code != 1 || !strings.Contains(errOut, "invalid (400): registry_auth: ") || !strings.Contains(errOut, reg.Host()) {
		t.Fatalf("deploy with a wrong password: exit %d, %q", code, errOut)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "deploy", reg.Ref(), "--name", name, "--registry-user", user, "--registry-password-stdin", "-q")
	cmd.Env = cliEnv(a)
	cmd.Stdin = strings.NewReader(pass + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("deploy with the credential: %v\n%s", err, errb.String())
	}
	if out.String() != name+"\n" {
		t.Errorf("stdout %q, want the name", out.String())
	}
	progress := errb.String()
	for _, want := range []string{"Pulling from dtma/private-", "Status: Downloaded newer image for " + reg.Ref(), "created " + name} {
		if !strings.Contains(progress, want) {
			t.Errorf("stderr lacks %q:\n%s", want, progress)
		}
	}
	if strings.Contains(progress, "\x1b[") {
		t.Errorf("progress drawn with terminal escapes on a pipe:\n%q", progress)
	}

	inst, err := a.Client().Instance(ctx, name)
	if err != nil || inst.DTMAStatus != "running" {
		t.Fatalf("instance: %+v %v", inst, err)
	}
	ins := a.Inspect(inst.ContainerID)
	if ins == nil {
		t.Fatal("no container")
	}
	for k, v := range ins.Container.Config.Labels {
		if strings.Contains(k+v, pass) {
			t.Errorf("label %s=%s holds the password", k, v)
		}
	}
	for _, e := range ins.Container.Config.Env {
		if strings.Contains(e, pass) {
			t.Errorf("container env %q holds the password", e)
		}
	}
	if strings.Contains(a.Logs(), pass) {
		t.Error("the agent logged the password")
	}
	files, _ := filepath.Glob(filepath.Join(a.Opts.DataDir, "dtma.db*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(pass)) {
			t.Errorf("%s holds the password", f)
		}
	}
	body := a.Expect(200, "GET", "/v1/instances/"+inst.ID, nil)
	if strings.Contains(string(body.Body), pass) {
		t.Error("GET /v1/instances shows the password")
	}
}
