package runtimetest_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/runtimetest"
)

// TestEngineSemantics: the answers the agent relies on, as the real Engine
// (and docker.Runtime) gives them.
func TestEngineSemantics(t *testing.T) {
	ctx := context.Background()
	rt := runtimetest.New("h1")
	cfg := dtma.ContainerConfig{Name: "dtma-a", Image: "img:1", Env: map[string]string{"K": "v"},
		Ports: []dtma.Port{{ContainerPort: 80, Protocol: "tcp", HostPort: 31000}}, Labels: rt.Labels(dtma.LabelInstance, "a")}

	if _, err := rt.CreateContainer(ctx, cfg); dtma.ErrorCode(err) != dtma.ENOTFOUND {
		t.Fatalf("create with an absent image: %v, want not found", err)
	}
	if _, err := rt.EnsureImage(ctx, "img:1", dtma.PullNever); dtma.ErrorCode(err) != dtma.EINVALID {
		t.Fatalf("pull policy never, image absent: %v", err)
	}
	if _, err := rt.EnsureImage(ctx, "img:1", dtma.PullMissing); err != nil || !rt.HasImage("img:1") {
		t.Fatalf("pull: %v", err)
	}
	rt.SetPullError("img:1", dtma.Errorf(dtma.EUNAVAILABLE, "registry down"))
	if w, err := rt.EnsureImage(ctx, "img:1", dtma.PullAlways); err != nil || w == "" {
		t.Fatalf("pull always with a local copy: warning %q, %v", w, err)
	}
	if _, err := rt.EnsureImage(ctx, "img:1", "sometimes"); dtma.ErrorCode(err) != dtma.EINVALID {
		t.Fatalf("unknown policy: %v", err)
	}
	rt.SetPullError("img:1", nil)

	id, err := rt.CreateContainer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.CreateContainer(ctx, cfg); dtma.ErrorCode(err) != dtma.ECONFLICT {
		t.Fatalf("second create of a name: %v, want conflict", err)
	}
	c, err := rt.InspectContainer(ctx, "dtma-a")
	if err != nil || c.ID != id || c.State != dtma.DockerCreated || c.Env["K"] != "v" || c.Summary {
		t.Fatalf("inspect by name: %+v %v", c, err)
	}
	if already, err := rt.StartContainer(ctx, id); err != nil || already {
		t.Fatalf("start: %v %v", already, err)
	}
	if already, err := rt.StartContainer(ctx, id); err != nil || !already {
		t.Fatalf("start of a running container: already=%v %v, want already (304)", already, err)
	}
	if already, err := rt.StopContainer(ctx, id, time.Second); err != nil || already {
		t.Fatalf("stop: %v %v", already, err)
	}
	if already, err := rt.StopContainer(ctx, id, time.Second); err != nil || !already {
		t.Fatalf("stop of a stopped container: already=%v %v, want already (304)", already, err)
	}
	if err := rt.RestartContainer(ctx, id, time.Second); err != nil || rt.Container(id).State != dtma.DockerRunning || rt.Container(id).RestartCount != 0 {
		t.Fatalf("restart: %v", err)
	}

	other := rt.AddContainer(dtma.Container{Name: "other", Image: "img:1", State: dtma.DockerRunning,
		Labels: map[string]string{dtma.LabelHost: "h2"}})
	list, err := rt.ListContainers(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id || !list[0].Summary || list[0].Env != nil {
		t.Fatalf("list of h1: %d %v", len(list), err)
	}
	if other == "" || rt.HostID() != "h1" {
		t.Fatalf("host %q", rt.HostID())
	}

	rt.SetLogs(id, "1\n2\n3\n")
	rc, err := rt.ContainerLogs(ctx, id, dtma.LogOptions{Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "3\n" {
		t.Fatalf("tail 1: %q", b)
	}

	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("remove of a missing container: %v, want nil", err)
	}
	for name, err := range map[string]error{
		"inspect": func() error { _, err := rt.InspectContainer(ctx, id); return err }(),
		"start":   func() error { _, err := rt.StartContainer(ctx, id); return err }(),
		"stop":    func() error { _, err := rt.StopContainer(ctx, id, 0); return err }(),
		"restart": rt.RestartContainer(ctx, id, 0),
		"logs":    func() error { _, err := rt.ContainerLogs(ctx, id, dtma.LogOptions{}); return err }(),
	} {
		if dtma.ErrorCode(err) != dtma.ENOTFOUND {
			t.Errorf("%s of a missing container: %v, want not found", name, err)
		}
	}
}

// TestEventsAndFailures: events reach the subscribers of the container's
// host only; injected failures, outages and hooks behave as documented.
func TestEventsAndFailures(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt := runtimetest.New("h1")
	ev, errc := rt.Events(ctx)
	id := rt.AddContainer(dtma.Container{Name: "a", Image: "img:1", Labels: rt.Labels()})
	rt.SetState(id, dtma.DockerRunning)
	rt.Crash(id, 2)
	var actions []string
	for len(actions) < 4 {
		e := <-ev
		actions = append(actions, e.Action)
		if e.Action == "die" && e.ExitCode != 2 {
			t.Errorf("die with exit code %d", e.ExitCode)
		}
	}
	if want := "create start die start"; join(actions) != want {
		t.Errorf("events %q, want %q", join(actions), want)
	}
	other := rt.AddContainer(dtma.Container{Name: "other", Image: "img:1", Labels: map[string]string{dtma.LabelHost: "h2"}})
	rt.SetState(other, dtma.DockerRunning)
	select {
	case e := <-ev:
		t.Fatalf("h1's subscriber got h2's %+v", e)
	default:
	}
	if c := rt.Container(id); c.RestartCount != 1 || c.State != dtma.DockerRunning || c.ExitCode != 0 {
		t.Errorf("after a crash: %+v", c)
	}

	rt.FailNext(runtimetest.StartContainer, dtma.Errorf(dtma.EINTERNAL, "boom"))
	if _, err := rt.StartContainer(ctx, id); dtma.ErrorCode(err) != dtma.EINTERNAL {
		t.Fatalf("injected failure: %v", err)
	}
	if _, err := rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("FailNext must fail one call only: %v", err)
	}
	rt.Delay(runtimetest.Ping, time.Hour)
	short, stop := context.WithTimeout(ctx, 10*time.Millisecond)
	if err := rt.Ping(short); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("delayed ping past its context: %v", err)
	}
	stop()
	rt.Delay(runtimetest.Ping, 0)

	rt.SetDown(true)
	if err := <-errc; dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("stream error %v", err)
	}
	if _, ok := <-ev; ok {
		// drain what was buffered before the break
		for range ev {
		}
	}
	if err := rt.Ping(ctx); dtma.ErrorCode(err) != dtma.EUNAVAILABLE {
		t.Fatalf("ping while down: %v", err)
	}
	if _, errc := rt.Events(ctx); dtma.ErrorCode(<-errc) != dtma.EUNAVAILABLE {
		t.Fatal("subscribing while down must fail")
	}
	rt.SetDown(false)
	if got := rt.CallsOf(runtimetest.Ping); len(got) != 2 {
		t.Fatalf("ping calls %v", got)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}
