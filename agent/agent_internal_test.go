package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// Unit tests of the agent's pure logic. The features (deploy, reconcile,
// crash safety) are proven end to end against real Docker in e2e/.

func testAgent(free func(string, int, string) bool) *Agent {
	cfg := Config{ListenPort: 30000, PortRangeStart: 31000, PortRangeEnd: 31003, PortFree: free,
		CrashLoopRestarts: 3, CrashLoopWindow: time.Minute}
	cfg.setDefaults()
	h := &health{log: cfg.Logger}
	return &Agent{cfg: cfg, hostID: "h1", log: cfg.Logger, locks: newKeyedMutex(), view: newView(nil, h, cfg.Logger), health: h,
		restarts: newCrashLoop(cfg.Now, cfg.CrashLoopRestarts, cfg.CrashLoopWindow),
		recreate: newRecreateBackoff(cfg.Now, cfg.RecreateBackoffMin, cfg.RecreateBackoffMax)}
}

func TestKeyedMutex(t *testing.T) {
	k := newKeyedMutex()
	unlock, err := k.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.TryLock("a"); ok {
		t.Fatal("TryLock took a held lock")
	}
	other, ok := k.TryLock("b")
	if !ok {
		t.Fatal("keys are not independent")
	}
	other()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.Lock(ctx, "a"); err == nil {
		t.Fatal("Lock did not honour the context")
	}
	unlock()
	again, ok := k.TryLock("a")
	if !ok {
		t.Fatal("lock not released")
	}
	again()
	if len(k.entries) != 0 {
		t.Fatalf("entries leak: %d", len(k.entries))
	}
}

func TestResolvePorts(t *testing.T) {
	busy := map[int]bool{31000: true}
	a := testAgent(func(ip string, port int, proto string) bool { return !busy[port] })
	held := &dtma.Instance{ID: "x", Name: "holder", Ports: []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 31001}}}
	view := []*dtma.Instance{held}

	got, _, err := a.resolvePorts(view, "", []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}, {ContainerPort: 9090, Protocol: "tcp", HostPort: 31002}}, "")
	if err != nil {
		t.Fatal(err)
	}
	// 31000 is bound on the host, 31001 held by an instance, 31002 asked for: 31003.
	if got[0].HostPort != 31003 || got[1].HostPort != 31002 {
		t.Fatalf("allocated %+v", got)
	}
	cases := []struct {
		port dtma.Port
		want string
	}{
		{dtma.Port{ContainerPort: 1, Protocol: "tcp", HostPort: 30000}, "agent's own port"},
		{dtma.Port{ContainerPort: 1, Protocol: "tcp", HostPort: 31001}, `instance "holder"`},
		{dtma.Port{ContainerPort: 1, Protocol: "tcp", HostPort: 31000}, "in use on the host"},
	}
	for _, c := range cases {
		_, _, err := a.resolvePorts(view, "", []dtma.Port{c.port}, dtma.PortConflictReject)
		if dtma.ErrorCode(err) != dtma.ECONFLICT || !strings.Contains(err.Error(), c.want) || dtma.ErrorField(err) != "ports[0].host_port" {
			t.Errorf("port %d: %v, want conflict saying %q", c.port.HostPort, err, c.want)
		}
	}
	// UDP 31001 is not held (the holder has tcp).
	if _, _, err := a.resolvePorts(view, "", []dtma.Port{{ContainerPort: 1, Protocol: "udp", HostPort: 31001}}, ""); err != nil {
		t.Errorf("udp on a tcp-held port: %v", err)
	}
	// The range runs out.
	busy[31003] = true
	if _, _, err := a.resolvePorts(view, "", []dtma.Port{{ContainerPort: 1, Protocol: "tcp"}, {ContainerPort: 2, Protocol: "tcp"}}, ""); dtma.ErrorCode(err) != dtma.ECONFLICT {
		t.Errorf("exhausted range: %v", err)
	}
}

// TestResolvePortsRemap: with PortConflictRemap a fixed host port that cannot
// be had — for each of the three reasons — is allocated from the range, and
// the remap says from where to where and why; a free fixed port is kept.
func TestResolvePortsRemap(t *testing.T) {
	busy := map[int]bool{31000: true, 40000: true}
	a := testAgent(func(ip string, port int, proto string) bool { return !busy[port] })
	held := &dtma.Instance{ID: "x", Name: "holder", Ports: []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 31001}}}
	view := []*dtma.Instance{held}
	cases := []struct {
		requested int
		want      int
		why       string
	}{
		{30000, 31002, "agent's own port"},
		{31001, 31002, `instance "holder"`},
		{40000, 31002, "in use on the host"},
		{40001, 40001, ""},
	}
	for _, c := range cases {
		got, remaps, err := a.resolvePorts(view, "", []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: c.requested}}, dtma.PortConflictRemap)
		if err != nil {
			t.Fatalf("port %d: %v", c.requested, err)
		}
		if got[0].HostPort != c.want {
			t.Errorf("port %d: published on %d, want %d", c.requested, got[0].HostPort, c.want)
		}
		if c.why == "" {
			if len(remaps) != 0 {
				t.Errorf("port %d: remapped %+v though it was free", c.requested, remaps)
			}
			continue
		}
		if len(remaps) != 1 || remaps[0].Requested != c.requested || remaps[0].To != c.want || !strings.Contains(remaps[0].Reason, c.why) || remaps[0].Field != "ports[0].host_port" {
			t.Errorf("port %d: remaps %+v, want one to %d saying %q", c.requested, remaps, c.want, c.why)
		}
	}
	// Two entries asking for the agent's port get two different ports.
	got, remaps, err := a.resolvePorts(view, "", []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30000}, {ContainerPort: 9090, Protocol: "tcp"}}, dtma.PortConflictRemap)
	if err != nil || got[0].HostPort == got[1].HostPort || len(remaps) != 1 {
		t.Errorf("two ports: %+v %+v %v", got, remaps, err)
	}
}

func TestMatchExisting(t *testing.T) {
	a := testAgent(nil)
	spec := dtma.Spec{Image: "img:1", Env: map[string]string{"K": "secret-v1"}}
	a.view.rows["1"] = &dtma.Instance{ID: "1", Name: "tool", AccountToolInstanceID: "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10", Spec: spec, SpecHash: spec.Hash()}

	same := dtma.DeployRequest{Name: "tool", AccountToolInstanceID: "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10", Spec: spec}
	if inst, err := a.matchExisting(same); err != nil || inst == nil || inst.ID != "1" {
		t.Fatalf("identical deploy: %v %v", inst, err)
	}
	changed := same
	changed.Spec = dtma.Spec{Image: "img:1", Env: map[string]string{"K": "secret-v2"}}
	_, err := a.matchExisting(changed)
	if dtma.ErrorCode(err) != dtma.ECONFLICT || !strings.Contains(err.Error(), "env values differ") ||
		strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "K,") || strings.Contains(err.Error(), "env K") {
		t.Fatalf("changed env: %v", err)
	}
	otherName := same
	otherName.Name = "another"
	if _, err := a.matchExisting(otherName); dtma.ErrorCode(err) != dtma.ECONFLICT || dtma.ErrorField(err) != "account_tool_instance_id" {
		t.Fatalf("account id reused: %v", err)
	}
	fresh := dtma.DeployRequest{Name: "new", Spec: spec}
	if inst, err := a.matchExisting(fresh); inst != nil || err != nil {
		t.Fatalf("new name: %v %v", inst, err)
	}
}

func TestInstanceFromContainer(t *testing.T) {
	c := &dtma.Container{
		ID: "cid", Name: "dtma-tool", Image: "img:1", State: dtma.DockerExited,
		Env: map[string]string{"PATH": "/bin", "API_KEY": "v"},
		Labels: map[string]string{
			dtma.LabelInstance: "Tool", dtma.LabelAccountID: "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10",
			dtma.LabelSpecHash: "h", dtma.LabelEnvNames: "API_KEY", dtma.LabelPorts: `[{"container_port":8080,"protocol":"tcp","host_port":0}]`,
		},
		Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31005, HostIP: "127.0.0.1"}},
	}
	inst := instanceFromContainer(c, "id1", "Tool")
	if len(inst.Spec.Env) != 1 || inst.Spec.Env["API_KEY"] != "v" {
		t.Errorf("env %v: want only the labelled names (no image env)", inst.Spec.EnvNames())
	}
	if inst.Spec.Ports[0].HostPort != 0 || inst.Ports[0].HostPort != 31005 {
		t.Errorf("requested %+v resolved %+v", inst.Spec.Ports, inst.Ports)
	}
	if inst.SpecHash != inst.Spec.Hash() || inst.AccountToolInstanceID != "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10" || inst.DesiredState != dtma.DesiredStopped {
		t.Errorf("%+v", inst)
	}
}

func TestCrashLoopWindow(t *testing.T) {
	now := time.Now()
	c := newCrashLoop(func() time.Time { return now }, 3, time.Minute)
	c.note("x", 2)
	if c.looping("x") {
		t.Fatal("2 restarts < 3")
	}
	c.note("x", 1)
	if !c.looping("x") {
		t.Fatal("3 restarts within the window")
	}
	now = now.Add(2 * time.Minute)
	if c.looping("x") {
		t.Fatal("restarts outside the window still count")
	}
}

func TestRecreateBackoff(t *testing.T) {
	b := newRecreateBackoff(time.Now, time.Second, time.Minute)
	if !b.allowed("x") {
		t.Fatal("first attempt must be allowed")
	}
	b.failed("x")
	if b.allowed("x") {
		t.Fatal("retry allowed at once after a failure")
	}
	b.forget("x")
	if !b.allowed("x") {
		t.Fatal("success must reset the backoff")
	}
}

func TestAdoptCandidates(t *testing.T) {
	got := strings.Join(adoptCandidates(dtma.AdoptRequest{Name: "Context7 MCP Server-1"}), "|")
	for _, want := range []string{"Context7-MCP-Server-1", "context7-mcp-server-1"} {
		if !strings.Contains(got, want) {
			t.Errorf("candidates %q lack %q", got, want)
		}
	}
	if c := adoptCandidates(dtma.AdoptRequest{Name: "x", Container: "given"}); len(c) != 1 || c[0] != "given" {
		t.Errorf("explicit container: %v", c)
	}
}

func TestSameHostPorts(t *testing.T) {
	p := func(cport, hport int, proto, ip string) dtma.Port {
		return dtma.Port{ContainerPort: cport, HostPort: hport, Protocol: proto, HostIP: ip}
	}
	for _, tc := range []struct {
		name string
		a, b []dtma.Port
		want bool
	}{
		{"both empty", nil, []dtma.Port{}, true},
		{"same, other order", []dtma.Port{p(80, 1, "tcp", ""), p(81, 2, "tcp", "")}, []dtma.Port{p(81, 2, "tcp", ""), p(80, 1, "tcp", "")}, true},
		{"host ip aside", []dtma.Port{p(80, 1, "tcp", "127.0.0.1")}, []dtma.Port{p(80, 1, "tcp", "")}, true},
		{"other host port", []dtma.Port{p(80, 1, "tcp", "")}, []dtma.Port{p(80, 2, "tcp", "")}, false},
		{"other protocol", []dtma.Port{p(80, 1, "tcp", "")}, []dtma.Port{p(80, 1, "udp", "")}, false},
		{"one more", []dtma.Port{p(80, 1, "tcp", "")}, []dtma.Port{p(80, 1, "tcp", ""), p(80, 1, "tcp", "")}, false},
		{"duplicates differ", []dtma.Port{p(80, 1, "tcp", ""), p(80, 1, "tcp", "")}, []dtma.Port{p(80, 1, "tcp", ""), p(81, 1, "tcp", "")}, false},
	} {
		if got := sameHostPorts(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: sameHostPorts = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestListedUnchanged(t *testing.T) {
	a := testAgent(nil)
	settled := func() *dtma.Instance {
		return &dtma.Instance{ID: "i1", DesiredState: dtma.DesiredRunning, Status: dtma.StatusRunning,
			Observed: dtma.Observed{ContainerID: "c1", DockerStatus: dtma.DockerRunning}}
	}
	listed := func() *dtma.Container {
		return &dtma.Container{ID: "c1", State: dtma.DockerRunning, Summary: true}
	}
	if !a.listedUnchanged(settled(), listed()) {
		t.Fatalf("a settled running row and a running list entry: want unchanged")
	}
	for name, tc := range map[string]struct {
		inst func(*dtma.Instance)
		c    func(*dtma.Container)
	}{
		"operation pending":  {inst: func(i *dtma.Instance) { i.PendingOp = dtma.OpStop }},
		"other container":    {c: func(c *dtma.Container) { c.ID = "c2" }},
		"other state word":   {c: func(c *dtma.Container) { c.State = dtma.DockerExited }},
		"restarting":         {inst: func(i *dtma.Instance) { i.DockerStatus = dtma.DockerRestarting }, c: func(c *dtma.Container) { c.State = dtma.DockerRestarting }},
		"status out of date": {inst: func(i *dtma.Instance) { i.Status = dtma.StatusCrashLoop }},
	} {
		inst, c := settled(), listed()
		if tc.inst != nil {
			tc.inst(inst)
		}
		if tc.c != nil {
			tc.c(c)
		}
		if a.listedUnchanged(inst, c) {
			t.Errorf("%s: listedUnchanged = true, want an inspect", name)
		}
	}
	errored := settled()
	errored.Status = dtma.StatusError // kept until the next operation: no reason to inspect
	if !a.listedUnchanged(errored, listed()) {
		t.Errorf("a row in error whose container the list shows unchanged: want unchanged")
	}
}

// TestProbePortFree: a port bound on loopback is not free; once released
// it is.
func TestProbePortFree(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		var port int
		var closeFn func() error
		if proto == "tcp" {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port, closeFn = l.Addr().(*net.TCPAddr).Port, l.Close
		} else {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port, closeFn = c.LocalAddr().(*net.UDPAddr).Port, c.Close
		}
		if probePortFree("127.0.0.1", port, proto) {
			t.Errorf("%s port %d is bound but probed free", proto, port)
		}
		closeFn()
		if !probePortFree("127.0.0.1", port, proto) {
			t.Errorf("%s port %d is released but probed busy", proto, port)
		}
	}
	if !probePortFree("127.0.0.1", 1, "sctp") {
		t.Error("sctp is not probed: want free")
	}
}

func TestValidContainerRef(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, ok := range []string{"legacy-tool", "/legacy-tool", "Tool_1.a", id, "abc123"} {
		if !validContainerRef(ok) {
			t.Errorf("validContainerRef(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "/", "../images/x", "../containers", "a/b", ".hidden", "-x", "a..b", "a b", "x?y", "x%2f", strings.Repeat("a", 256), strings.ToUpper(id) + "/"} {
		if validContainerRef(bad) {
			t.Errorf("validContainerRef(%q) = true", bad)
		}
	}
	c := &dtma.Container{ID: id, Name: "legacy-tool"}
	for ref, want := range map[string]bool{id: true, "legacy-tool": true, "/legacy-tool": true, id[:12]: false, "legacy": false} {
		if got := exactContainer(c, ref); got != want {
			t.Errorf("exactContainer(%q) = %v, want %v", ref, got, want)
		}
	}
}

// Lookup resolves the instance id first, then the account id, then the
// name; a row stored earlier under a UUID-shaped name cannot capture
// another's id or account id, and still resolves by its name.
func TestLookupOrder(t *testing.T) {
	a := testAgent(nil)
	victim := &dtma.Instance{ID: "11111111-1111-4111-8111-111111111111", Name: "victim", AccountToolInstanceID: "22222222-2222-4222-8222-222222222222"}
	byID := &dtma.Instance{ID: "33333333-3333-4333-8333-333333333333", Name: victim.ID}
	byAcct := &dtma.Instance{ID: "44444444-4444-4444-8444-444444444444", Name: strings.ToUpper(victim.AccountToolInstanceID)}
	old := &dtma.Instance{ID: "55555555-5555-4555-8555-555555555555", Name: "66666666-6666-4666-8666-666666666666"}
	for _, inst := range []*dtma.Instance{victim, byID, byAcct, old} {
		a.view.rows[inst.ID] = inst
	}
	for ref, want := range map[string]string{
		victim.ID: victim.ID, strings.ToUpper(victim.ID): victim.ID,
		victim.AccountToolInstanceID: victim.ID, strings.ToUpper(victim.AccountToolInstanceID): victim.ID,
		"victim": victim.ID, old.Name: old.ID, byID.ID: byID.ID,
	} {
		if got := a.view.lookup(ref); got == nil || got.ID != want {
			t.Errorf("lookup(%q) = %v, want %s", ref, got, want)
		}
	}
}

// A look-alike container is claimed by spec only when its own env carries
// the row's values: the label hash leaves them out.
func TestSameEnvValues(t *testing.T) {
	spec := dtma.Spec{Image: "x:1", Env: map[string]string{"API_KEY": "v1"}}
	for env, want := range map[string]bool{"v1": true, "v2": false, "": false} {
		c := &dtma.Container{Env: map[string]string{"PATH": "/bin"}}
		if env != "" {
			c.Env["API_KEY"] = env
		}
		if got := sameEnvValues(c, spec); got != want {
			t.Errorf("container API_KEY=%q: sameEnvValues = %v, want %v", env, got, want)
		}
	}
	if !sameSpecHash(spec.LegacyHash(), &dtma.Instance{Spec: spec, SpecHash: spec.Hash()}) || sameSpecHash("", &dtma.Instance{Spec: spec}) {
		t.Errorf("sameSpecHash must accept the current and the older label, never an empty one")
	}
}

// A registry that cannot be reached does not mark Docker down; Docker
// itself not answering does.
func TestNoteDockerIgnoresRegistryFailures(t *testing.T) {
	a := testAgent(nil)
	a.kick = make(chan struct{}, 1)
	a.health.dockerBack = a.requestRelist
	a.health.noteDocker(&dtma.Error{Code: dtma.EUNAVAILABLE, Message: "pull image x: the registry could not be reached or failed", Err: fmt.Errorf("%w 127.0.0.1:1: refused", dtma.ErrRegistry)})
	if a.health.dockerErr != nil {
		t.Fatalf("a registry failure marked Docker down: %v", a.health.dockerErr)
	}
	a.health.noteDocker(dtma.Errorf(dtma.EUNAVAILABLE, "docker unavailable: ping"))
	if a.health.dockerErr == nil {
		t.Fatalf("Docker not answering was not recorded")
	}
}
