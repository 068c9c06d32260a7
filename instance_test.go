package dtma_test

import (
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestSpecHashStableAndOrderFree(t *testing.T) {
	a := dtma.Spec{Image: "x:1", Env: map[string]string{"A": "1", "B": "2"}, Ports: []dtma.Port{
		{ContainerPort: 80, Protocol: "tcp", HostPort: 1}, {ContainerPort: 81, Protocol: "tcp", HostPort: 2}}}
	b := dtma.Spec{Image: "x:1", Env: map[string]string{"B": "2", "A": "1"}, Ports: []dtma.Port{
		{ContainerPort: 81, Protocol: "tcp", HostPort: 2}, {ContainerPort: 80, Protocol: "tcp", HostPort: 1}}}
	if a.Hash() != b.Hash() {
		t.Fatal("hash depends on order")
	}
	if len(a.Hash()) != 64 {
		t.Fatalf("hash %q", a.Hash())
	}
	c := a
	c.Env = map[string]string{"A": "1", "B": "3"}
	if a.Hash() != c.Hash() {
		t.Fatal("an env value change changes the hash: the label would be an offline oracle for the value")
	}
	if a.Equal(c) || !a.Equal(b) {
		t.Fatal("Equal must see env values and ignore order")
	}
	c.Env = map[string]string{"A": "1", "C": "2"}
	if a.Hash() == c.Hash() {
		t.Fatal("an env name change does not change the hash")
	}
	if d := a.Diff(b); len(d) != 0 {
		t.Fatalf("equal specs differ: %v", d)
	}
}

func TestSpecDiffNamesNoValues(t *testing.T) {
	a := dtma.Spec{Image: "x:1", Env: map[string]string{"KEY": "old-secret", "SAME": "s", "GONE": "g"}}
	b := dtma.Spec{Image: "x:2", Env: map[string]string{"KEY": "new-secret", "SAME": "s", "NEW": "v"},
		Ports: []dtma.Port{{ContainerPort: 1, Protocol: "tcp"}}}
	d := strings.Join(a.Diff(b), "; ")
	for _, want := range []string{"image", "env added: NEW", "env removed: GONE", "env values differ", "ports"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff %q lacks %q", d, want)
		}
	}
	// KEY changed only its value: naming it would confirm a guessed secret.
	if strings.Contains(d, "secret") || strings.Contains(d, "SAME") || strings.Contains(d, "KEY") {
		t.Errorf("diff %q leaks a value or names a variable whose only change is its value", d)
	}
	only := dtma.Spec{Image: "x:1", Env: map[string]string{"KEY": "guess", "SAME": "s", "GONE": "g"}}
	if d := a.Diff(only); len(d) != 1 || d[0] != "env values differ" {
		t.Errorf("value-only diff = %q, want just \"env values differ\"", d)
	}
}

// The spec-hash label must not be the SHA-256 of the canonical spec with its
// env values (checkable offline against a guessed secret).
func TestSpecHashIsNotTheLegacyValueHash(t *testing.T) {
	s := dtma.Spec{Image: "x:1", Env: map[string]string{"API_KEY": "hunter2"}}
	if s.Hash() == s.LegacyHash() {
		t.Fatal("Hash is the unsalted SHA-256 over env values")
	}
	guess := dtma.Spec{Image: "x:1", Env: map[string]string{"API_KEY": "wrong"}}
	if s.Hash() != guess.Hash() {
		t.Fatal("the hash distinguishes env values")
	}
	if s.LegacyHash() == guess.LegacyHash() {
		t.Fatal("LegacyHash must keep the old behaviour to recognise old labels")
	}
}

func TestDriftAndSettledStatus(t *testing.T) {
	inst := &dtma.Instance{DesiredState: dtma.DesiredRunning, Observed: dtma.Observed{DockerStatus: dtma.DockerExited}}
	if !inst.Drift() || inst.SettledStatus() != dtma.StatusStopped {
		t.Fatalf("stopped behind the back: drift %v status %s", inst.Drift(), inst.SettledStatus())
	}
	inst.PendingOp = dtma.OpStart
	if inst.Drift() {
		t.Fatal("drift reported during an operation")
	}
	inst.PendingOp = dtma.OpNone
	inst.DockerStatus = dtma.DockerRunning
	if inst.Drift() || inst.SettledStatus() != dtma.StatusRunning {
		t.Fatal("running as desired reported as drift")
	}
	inst.DockerStatus = dtma.DockerMissing
	if inst.SettledStatus() != dtma.StatusMissing {
		t.Fatal("missing")
	}
}

func TestCloneIsDeep(t *testing.T) {
	a := &dtma.Instance{Spec: dtma.Spec{Env: map[string]string{"A": "1"}, Ports: []dtma.Port{{ContainerPort: 1}}}, Ports: []dtma.Port{{HostPort: 2}}}
	b := a.Clone()
	b.Spec.Env["A"] = "2"
	b.Spec.Ports[0].ContainerPort = 9
	b.Ports[0].HostPort = 9
	if a.Spec.Env["A"] != "1" || a.Spec.Ports[0].ContainerPort != 1 || a.Ports[0].HostPort != 2 {
		t.Fatal("Clone shares memory")
	}
}

func TestDockerPortBindings(t *testing.T) {
	m := dtma.DockerPortBindings([]dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30001, HostIP: "127.0.0.1"}})
	if got := m["8080/tcp"]; len(got) != 1 || got[0].HostPort != "30001" || got[0].HostIP != "127.0.0.1" {
		t.Fatalf("%+v", m)
	}
}

func TestErrorHelpers(t *testing.T) {
	e := dtma.FieldErrorf(dtma.EINVALID, "image", "is required")
	if dtma.ErrorCode(e) != dtma.EINVALID || dtma.ErrorMessage(e) != "image: is required" || dtma.ErrorField(e) != "image" {
		t.Fatalf("%q %q %q", dtma.ErrorCode(e), dtma.ErrorMessage(e), dtma.ErrorField(e))
	}
	if dtma.ErrorCode(nil) != "" {
		t.Fatal("nil code")
	}
	plain := strings.NewReader("") // any non-dtma error
	_ = plain
	if dtma.ErrorMessage(errPlain{}) != "internal error" || dtma.ErrorCode(errPlain{}) != dtma.EINTERNAL {
		t.Fatal("plain errors must map to internal without details")
	}
}

type errPlain struct{}

func (errPlain) Error() string { return "secret detail" }
