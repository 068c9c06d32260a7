package testregistry_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/testregistry"
)

func pull(ctx context.Context, c *client.Client, ref string) error {
	resp, err := c.ImagePull(ctx, ref, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	return resp.Wait(ctx)
}

func TestRegistry_Pull(t *testing.T) {
	t.Parallel()
	c := dockertest.Client(t)
	echo := dockertest.EchoImage(t)
	reg := testregistry.New(t, c, echo, "dtma/echo", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ref := reg.Ref()
	if want := reg.Host() + "/dtma/echo:v1"; ref != want || !strings.HasPrefix(ref, "127.0.0.1:") {
		t.Fatalf("Ref = %q, want %q on 127.0.0.1", ref, want)
	}
	if _, err := c.ImageInspect(ctx, ref); !cerrdefs.IsNotFound(err) {
		t.Fatalf("before pull: inspect %s: %v, want not found", ref, err)
	}
	if reg.Connections() != 0 {
		t.Fatalf("registry contacted before any pull")
	}

	if err := pull(ctx, c, ref); err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	img, err := c.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("after pull: inspect %s: %v", ref, err)
	}
	if img.ID != reg.ConfigDigest() {
		t.Errorf("pulled image ID %s, want the served config %s", img.ID, reg.ConfigDigest())
	}
	if img.Config == nil || img.Config.Labels[testregistry.LabelKey] == "" {
		t.Errorf("pulled image lacks label %s", testregistry.LabelKey)
	}
	local, err := c.ImageInspect(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID == local.ID {
		t.Errorf("pulled image has the local image's ID %s, want a distinct one", img.ID)
	}
	if strings.Join(img.RootFS.Layers, ",") != strings.Join(local.RootFS.Layers, ",") {
		t.Errorf("pulled layers %v, want the local image's %v", img.RootFS.Layers, local.RootFS.Layers)
	}
	if reg.Requests() == 0 {
		t.Errorf("Requests = 0 after a pull")
	}

	// By digest too.
	if err := pull(ctx, c, reg.DigestRef()); err != nil {
		t.Errorf("pull %s: %v", reg.DigestRef(), err)
	}
}

func TestRegistry_HTTP(t *testing.T) {
	t.Parallel()
	c := dockertest.Client(t)
	reg := testregistry.New(t, c, dockertest.EchoImage(t), "dtma/http", "latest")
	base := "http://" + reg.Host()

	do := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, _ := do("GET", "/v2/")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("GET /v2/: %d %v", resp.StatusCode, resp.Header)
	}

	resp, body := do("GET", "/v2/dtma/http/manifests/latest")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != testregistry.MediaTypeManifest ||
		resp.Header.Get("Docker-Content-Digest") != reg.ManifestDigest() {
		t.Fatalf("GET manifest: %d %v", resp.StatusCode, resp.Header)
	}
	var m struct {
		SchemaVersion int
		MediaType     string
		Config        struct{ MediaType, Digest string }
		Layers        []struct {
			MediaType, Digest string
			Size              int
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.MediaType != testregistry.MediaTypeManifest ||
		m.Config.MediaType != testregistry.MediaTypeConfig || m.Config.Digest != reg.ConfigDigest() || len(m.Layers) == 0 {
		t.Errorf("manifest = %s", body)
	}
	for _, l := range m.Layers {
		resp, _ := do("HEAD", "/v2/dtma/http/blobs/"+l.Digest)
		if resp.StatusCode != 200 || resp.ContentLength != int64(l.Size) || l.MediaType != testregistry.MediaTypeLayer {
			t.Errorf("HEAD layer %s: %d, length %d, want 200 and %d", l.Digest, resp.StatusCode, resp.ContentLength, l.Size)
		}
	}

	resp, body = do("HEAD", "/v2/dtma/http/manifests/"+reg.ManifestDigest())
	if resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("HEAD manifest by digest: %d, %d body bytes", resp.StatusCode, len(body))
	}

	for _, path := range []string{"/v2/dtma/http/manifests/nope", "/v2/other/manifests/latest"} {
		resp, body := do("GET", path)
		if resp.StatusCode != 404 || !strings.Contains(string(body), `"MANIFEST_UNKNOWN"`) {
			t.Errorf("GET %s: %d %s, want 404 MANIFEST_UNKNOWN", path, resp.StatusCode, body)
		}
	}
	resp, body = do("GET", "/v2/dtma/http/blobs/sha256:"+strings.Repeat("0", 64))
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"BLOB_UNKNOWN"`) {
		t.Errorf("GET unknown blob: %d %s, want 404 BLOB_UNKNOWN", resp.StatusCode, body)
	}

	reg.SetDown(true)
	resp, body = do("GET", "/v2/dtma/http/manifests/latest")
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"UNAVAILABLE"`) {
		t.Errorf("down: GET manifest: %d %s, want 503", resp.StatusCode, body)
	}
	reg.SetDown(false)
	if resp, _ := do("GET", "/v2/dtma/http/manifests/latest"); resp.StatusCode != 200 {
		t.Errorf("up again: GET manifest: %d", resp.StatusCode)
	}
}

func TestRegistry_PullFailures(t *testing.T) {
	t.Parallel()
	c := dockertest.Client(t)
	reg := testregistry.New(t, c, dockertest.EchoImage(t), "dtma/fail", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Engine 20.10 answers a plain error (not a typed not-found) naming
	// the registry's error code.
	if err := pull(ctx, c, reg.Repo()+":nope"); err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("pull unknown tag: %v, want manifest unknown", err)
	}
	reg.SetDown(true)
	if err := pull(ctx, c, reg.Ref()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("pull while down: %v, want an error naming 503", err)
	}
	if _, err := c.ImageInspect(ctx, reg.Ref()); !cerrdefs.IsNotFound(err) {
		t.Errorf("after failed pull: inspect: %v, want not found", err)
	}
	reg.SetDown(false)
	reg.Stop()
	if err := pull(ctx, c, reg.Ref()); err == nil {
		t.Errorf("pull after Stop: no error")
	}
}
