package docker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/testregistry"
)

// pullFixture is shared by the subtests of TestPull: one Runtime, one raw
// client for checks and the echo image that each subtest serves from its
// own test registry (so each has a distinct image to pull). Pulled images
// are removed by the registry's cleanup; these tests create no containers.
type pullFixture struct {
	rt    *docker.Runtime
	c     *client.Client
	image string
}

func newPullFixture(t *testing.T) *pullFixture {
	t.Helper()
	c := dockertest.Client(t)
	image := dockertest.EchoImage(t)
	rt, err := docker.New(docker.Options{})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return &pullFixture{rt: rt, c: c, image: image}
}

// registry starts a test registry serving the echo image as dtma/<name>:v1.
func (f *pullFixture) registry(t *testing.T, name string) *testregistry.Registry {
	t.Helper()
	return testregistry.New(t, f.c, f.image, "dtma/"+name, "v1")
}

// present reports whether the daemon has ref.
func (f *pullFixture) present(t *testing.T, ref string) bool {
	t.Helper()
	_, err := f.c.ImageInspect(context.Background(), ref)
	switch {
	case err == nil:
		return true
	case cerrdefs.IsNotFound(err):
		return false
	}
	t.Fatalf("inspect image %s: %v", ref, err)
	return false
}

// ensure calls EnsureImage with a bounded context.
func (f *pullFixture) ensure(t *testing.T, ref string, policy dtma.PullPolicy) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return f.rt.EnsureImage(ctx, ref, policy)
}

// mustPull makes ref present through EnsureImage with policy missing.
func (f *pullFixture) mustPull(t *testing.T, ref string) {
	t.Helper()
	if warning, err := f.ensure(t, ref, dtma.PullMissing); err != nil || warning != "" {
		t.Fatalf("EnsureImage(%s, missing) = %q, %v; want a clean pull", ref, warning, err)
	}
	if !f.present(t, ref) {
		t.Fatalf("%s absent after a successful pull", ref)
	}
}

func pullWantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := dtma.ErrorCode(err); got != code {
		t.Fatalf("%s: error code %q (err %v), want %q", what, got, err, code)
	}
	var de *dtma.Error
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %T is not a *dtma.Error", what, err)
	}
}

func TestPull(t *testing.T) {
	f := newPullFixture(t)

	t.Run("MissingPullsAbsent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "missing-absent")
		ref := reg.Ref()
		if f.present(t, ref) {
			t.Fatalf("%s present before the test", ref)
		}
		f.mustPull(t, ref)
		if reg.Requests() == 0 {
			t.Errorf("pulled without a request to the registry")
		}
		res, err := f.c.ImageInspect(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		if res.ID != reg.ConfigDigest() {
			t.Errorf("image ID %s, want the registry's %s", res.ID, reg.ConfigDigest())
		}
	})

	t.Run("MissingSkipsPresent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "missing-present")
		f.mustPull(t, reg.Ref())
		reqs, conns := reg.Requests(), reg.Connections()
		warning, err := f.ensure(t, reg.Ref(), dtma.PullMissing)
		if err != nil || warning != "" {
			t.Fatalf("EnsureImage(present, missing) = %q, %v; want \"\", nil", warning, err)
		}
		if reg.Requests() != reqs || reg.Connections() != conns {
			t.Errorf("registry contacted for a present image: %d more requests, %d more connections",
				reg.Requests()-reqs, reg.Connections()-conns)
		}
	})

	t.Run("DefaultPolicyIsMissing", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "default-policy")
		if warning, err := f.ensure(t, reg.Ref(), ""); err != nil || warning != "" {
			t.Fatalf("EnsureImage(absent, \"\") = %q, %v; want a clean pull", warning, err)
		}
		if !f.present(t, reg.Ref()) {
			t.Fatalf("%s absent after EnsureImage with the default policy", reg.Ref())
		}
		reqs := reg.Requests()
		if _, err := f.ensure(t, reg.Ref(), ""); err != nil {
			t.Fatal(err)
		}
		if reg.Requests() != reqs {
			t.Errorf("default policy pulled a present image")
		}
	})

	t.Run("AlwaysPulls", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "always")
		f.mustPull(t, reg.Ref())
		reqs := reg.Requests()
		warning, err := f.ensure(t, reg.Ref(), dtma.PullAlways)
		if err != nil || warning != "" {
			t.Fatalf("EnsureImage(present, always) = %q, %v; want \"\", nil", warning, err)
		}
		if reg.Requests() == reqs {
			t.Errorf("policy always did not contact the registry")
		}
	})

	t.Run("AlwaysPullsAbsent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "always-absent")
		if warning, err := f.ensure(t, reg.Ref(), dtma.PullAlways); err != nil || warning != "" {
			t.Fatalf("EnsureImage(absent, always) = %q, %v; want \"\", nil", warning, err)
		}
		if !f.present(t, reg.Ref()) {
			t.Errorf("%s absent after EnsureImage(always)", reg.Ref())
		}
	})

	t.Run("AlwaysRegistryDownFallsBack", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "always-down")
		f.mustPull(t, reg.Ref())
		reg.SetDown(true)
		reqs := reg.Requests()
		warning, err := f.ensure(t, reg.Ref(), dtma.PullAlways)
		if err != nil {
			t.Fatalf("EnsureImage(present, always, registry down): %v; want the local copy", err)
		}
		if warning == "" {
			t.Errorf("EnsureImage(present, always, registry down): no warning")
		} else if !strings.Contains(warning, reg.Ref()) {
			t.Errorf("warning %q does not name the image", warning)
		}
		if reg.Requests() == reqs {
			t.Errorf("policy always did not try the registry")
		}
		if !f.present(t, reg.Ref()) {
			t.Errorf("local copy gone after a failed pull")
		}
	})

	t.Run("AlwaysRegistryGoneFallsBack", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "always-gone")
		f.mustPull(t, reg.Ref())
		reg.Stop() // connection refused
		warning, err := f.ensure(t, reg.Ref(), dtma.PullAlways)
		if err != nil || warning == "" {
			t.Fatalf("EnsureImage(present, always, registry stopped) = %q, %v; want a warning and no error", warning, err)
		}
	})

	t.Run("NeverAbsent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "never-absent")
		_, err := f.ensure(t, reg.Ref(), dtma.PullNever)
		pullWantCode(t, "EnsureImage(absent, never)", err, dtma.EINVALID)
		if reg.Connections() != 0 {
			t.Errorf("policy never contacted the registry (%d connections)", reg.Connections())
		}
		if f.present(t, reg.Ref()) {
			t.Errorf("%s present after EnsureImage(never)", reg.Ref())
		}
	})

	t.Run("NeverPresent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "never-present")
		f.mustPull(t, reg.Ref())
		reqs, conns := reg.Requests(), reg.Connections()
		if warning, err := f.ensure(t, reg.Ref(), dtma.PullNever); err != nil || warning != "" {
			t.Fatalf("EnsureImage(present, never) = %q, %v; want \"\", nil", warning, err)
		}
		if reg.Requests() != reqs || reg.Connections() != conns {
			t.Errorf("policy never contacted the registry")
		}
	})

	t.Run("MissingUnknownTag", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "unknown-tag")
		ref := reg.Repo() + ":no-such-tag"
		_, err := f.ensure(t, ref, dtma.PullMissing)
		pullWantCode(t, "EnsureImage(unknown tag, missing)", err, dtma.EINVALID)
		if dtma.ErrorField(err) != "image" || !strings.Contains(dtma.ErrorMessage(err), ref) || !strings.Contains(dtma.ErrorMessage(err), "not found") {
			t.Errorf("unknown tag: %q (field %q), want field image naming the image and saying not found", dtma.ErrorMessage(err), dtma.ErrorField(err))
		}
		if strings.Contains(dtma.ErrorMessage(err), "manifest unknown") {
			t.Errorf("unknown tag: %q echoes the registry's text", dtma.ErrorMessage(err))
		}
		if reg.Requests() == 0 {
			t.Errorf("the registry was not asked")
		}
		if f.present(t, ref) {
			t.Errorf("%s present after a failed pull", ref)
		}
	})

	t.Run("AlwaysUnknownTag", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "always-unknown-tag")
		_, err := f.ensure(t, reg.Repo()+":no-such-tag", dtma.PullAlways)
		pullWantCode(t, "EnsureImage(unknown tag, always)", err, dtma.EINVALID)
	})

	// The docker package documents EUNAVAILABLE when the image is absent and
	// the registry cannot be reached (as opposed to refusing the image).
	t.Run("MissingRegistryDownAbsent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "missing-down")
		reg.SetDown(true)
		_, err := f.ensure(t, reg.Ref(), dtma.PullMissing)
		pullWantCode(t, "EnsureImage(absent, missing, registry 503)", err, dtma.EUNAVAILABLE)
		// The registry's answer body is never passed on, and the failure
		// is the registry's, not Docker's.
		msg := dtma.ErrorMessage(err)
		if strings.Contains(msg, "SetDown") || strings.Contains(msg, "is down") || !strings.Contains(msg, "registry") || strings.Contains(strings.ToLower(msg), "docker") {
			t.Errorf("message %q: want a summary about the registry, without its body and without \"docker\"", msg)
		}
		if !errors.Is(err, dtma.ErrRegistry) {
			t.Errorf("error %v does not wrap dtma.ErrRegistry", err)
		}
		if reg.Requests() == 0 {
			t.Errorf("the registry was not asked")
		}
		if f.present(t, reg.Ref()) {
			t.Errorf("%s present after a failed pull", reg.Ref())
		}
	})

	t.Run("MissingRegistryGoneAbsent", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "missing-gone")
		reg.Stop()
		_, err := f.ensure(t, reg.Ref(), dtma.PullMissing)
		pullWantCode(t, "EnsureImage(absent, missing, registry stopped)", err, dtma.EUNAVAILABLE)
		if !errors.Is(err, dtma.ErrRegistry) || !strings.Contains(dtma.ErrorMessage(err), "registry") || strings.Contains(dtma.ErrorMessage(err), "connection refused") {
			t.Errorf("registry stopped: %q; want a registry error without the daemon's text", dtma.ErrorMessage(err))
		}
	})

	t.Run("RegistryUpAgain", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "up-again")
		reg.SetDown(true)
		if _, err := f.ensure(t, reg.Ref(), dtma.PullMissing); err == nil {
			t.Fatalf("EnsureImage with the registry down: no error")
		}
		reg.SetDown(false)
		f.mustPull(t, reg.Ref())
	})

	t.Run("InvalidInput", func(t *testing.T) {
		t.Parallel()
		reg := f.registry(t, "invalid")
		_, err := f.ensure(t, reg.Ref(), dtma.PullPolicy("sometimes"))
		pullWantCode(t, "EnsureImage(unknown policy)", err, dtma.EINVALID)
		_, err = f.ensure(t, "127.0.0.1:1/Not A Reference", dtma.PullMissing)
		pullWantCode(t, "EnsureImage(malformed reference)", err, dtma.EINVALID)
		if reg.Connections() != 0 {
			t.Errorf("invalid input contacted the registry")
		}
	})
}
