package docker_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/internal/testregistry"
)

// TestPrivateRegistry pulls from a test registry that requires basic
// auth: without a credential and with a wrong one the pull is a 4xx
// naming the registry (on registry_auth when the request carried the
// credential); the request's credential, the host's config.json (inline
// auths entry) and a credential helper each pull; progress is reported.
func TestPrivateRegistry(t *testing.T) {
	f := newPullFixture(t)
	const user, pass = "dtma-user", "s3cret-pa55"

	private := func(t *testing.T, name string) *testregistry.Registry {
		reg := f.registry(t, name)
		reg.RequireBasicAuth(user, pass)
		return reg
	}
	withPull := func(o dtma.PullOptions) (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		return dtma.WithPullOptions(ctx, o), cancel
	}

	t.Run("NoCredential", func(t *testing.T) {
		t.Parallel()
		reg := private(t, "auth-none")
		_, err := f.ensure(t, reg.Ref(), dtma.PullMissing)
		pullWantCode(t, "pull without a credential", err, dtma.EINVALID)
		if dtma.ErrorField(err) != "image" || !strings.Contains(dtma.ErrorMessage(err), "registry "+reg.Host()+" refused access") {
			t.Errorf("error %q (field %q), want one naming registry %s on image", dtma.ErrorMessage(err), dtma.ErrorField(err), reg.Host())
		}
	})

	t.Run("WrongCredential", func(t *testing.T) {
		t.Parallel()
		reg := private(t, "auth-wrong")
		ctx, cancel := withPull(dtma.PullOptions{Auth: &dtma.RegistryAuth{Username: user, Password: "wrong-" + pass}})
		defer cancel()
		_, err := f.rt.EnsureImage(ctx, reg.Ref(), dtma.PullMissing)
		pullWantCode(t, "pull with a wrong password", err, dtma.EINVALID)
		if dtma.ErrorField(err) != "registry_auth" || !strings.Contains(dtma.ErrorMessage(err), reg.Host()) {
			t.Errorf("error %q (field %q), want registry_auth naming %s", dtma.ErrorMessage(err), dtma.ErrorField(err), reg.Host())
		}
		if strings.Contains(err.Error(), pass) {
			t.Errorf("the error shows the password: %v", err)
		}
		if f.present(t, reg.Ref()) {
			t.Error("image present after a refused pull")
		}
	})

	t.Run("RequestCredentialWithProgress", func(t *testing.T) {
		t.Parallel()
		reg := private(t, "auth-request")
		var mu sync.Mutex
		var statuses []string
		ctx, cancel := withPull(dtma.PullOptions{
			Auth: &dtma.RegistryAuth{Username: user, Password: pass},
			Progress: func(p dtma.PullProgress) {
				mu.Lock()
				statuses = append(statuses, p.ID+"|"+p.Status)
				mu.Unlock()
			},
		})
		defer cancel()
		if _, err := f.rt.EnsureImage(ctx, reg.Ref(), dtma.PullMissing); err != nil {
			t.Fatalf("pull with the right credential: %v", err)
		}
		if !f.present(t, reg.Ref()) {
			t.Fatal("image absent after the pull")
		}
		// The echo image's only layer is already in the daemon (the image
		// served differs by its config), so the layer line is "Already
		// exists"; a layer line and the image's outcome must be there.
		all := strings.Join(statuses, "\n")
		var layer bool
		for _, st := range statuses {
			id, _, _ := strings.Cut(st, "|")
			layer = layer || (id != "" && id != "v1")
		}
		if !layer || !strings.Contains(all, "Status: Downloaded newer image for "+reg.Ref()) {
			t.Errorf("progress lacks a layer line or the image's outcome:\n%s", all)
		}
	})

	t.Run("HostConfigAuths", func(t *testing.T) {
		t.Parallel()
		reg := private(t, "auth-config")
		cfg := filepath.Join(t.TempDir(), "config.json")
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		if err := os.WriteFile(cfg, []byte(`{"auths":{"http://`+reg.Host()+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		rt, err := docker.New(docker.Options{DockerConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := rt.EnsureImage(ctx, reg.Ref(), dtma.PullMissing); err != nil {
			t.Fatalf("pull with the host's config.json: %v", err)
		}
	})

	t.Run("HostCredentialHelper", func(t *testing.T) {
		// Not parallel: it sets PATH for the helper.
		reg := private(t, "auth-helper")
		bin := t.TempDir()
		helper := "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = '" + reg.Host() + "' ] || { echo 'credentials not found in native keychain'; exit 1; }\n" +
			"printf '{\"ServerURL\":\"%s\",\"Username\":\"" + user + "\",\"Secret\":\"" + pass + "\"}' \"$server\"\n"
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-dtmatest"), []byte(helper), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		cfg := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(cfg, []byte(`{"credHelpers":{"`+reg.Host()+`":"dtmatest"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		rt, err := docker.New(docker.Options{DockerConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := rt.EnsureImage(ctx, reg.Ref(), dtma.PullMissing); err != nil {
			t.Fatalf("pull with the credential helper: %v", err)
		}
	})
}
