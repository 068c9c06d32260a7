// Package testregistry serves a local image over a minimal, read-only
// Docker Registry HTTP API v2 on 127.0.0.1, so tests can pull without any
// network. The Docker daemon treats registries on 127.0.0.0/8 as insecure,
// so plain HTTP works with no daemon configuration.
//
// The served image is the local one with one label added
// (LabelKey=<random>): each Registry serves a distinct image (its own image
// ID) that is absent from the daemon until pulled. The layers are the local
// image's, gzip-compressed. The pulled image is removed when the test ends.
//
// It is imported only by _test files.
package testregistry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Media types of the schema2 manifest and its parts.
const (
	MediaTypeManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// LabelKey is the image label that makes each Registry's image distinct.
const LabelKey = "dtma.testregistry"

// Registry is a running test registry serving one image as repo:tag.
type Registry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:<port>
	repo string
	tag  string

	manifest       []byte
	manifestDigest string
	blobs          map[string][]byte // digest -> content (config and layers)

	down        atomic.Bool
	basicAuth   atomic.Pointer[[2]string] // user, password; nil: anonymous
	requests    atomic.Int64              // HTTP requests handled
	connections atomic.Int64              // TCP connections accepted
	stopOnce    sync.Once
}

// New exports localImage from the daemon (docker save), builds a schema2
// manifest for it and serves it as repo:tag on 127.0.0.1:<random port>. It
// fails the test when the image cannot be exported or read. When the test
// ends the server stops and the references a pull of Ref creates (the tag
// and the digest reference) are removed from the daemon, without force;
// nothing else is touched. A test that runs containers from the pulled image
// must have them removed first: call New before dockertest.Cleanup (test
// cleanups run last-registered first).
func New(tb testing.TB, c *client.Client, localImage, repo, tag string) *Registry {
	tb.Helper()
	if !repoPattern.MatchString(repo) {
		tb.Fatalf("testregistry: bad repository name %q", repo)
	}
	if !tagPattern.MatchString(tag) {
		tb.Fatalf("testregistry: bad tag %q", tag)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	r := &Registry{repo: repo, tag: tag, blobs: map[string][]byte{}}
	if err := r.load(ctx, c, localImage); err != nil {
		tb.Fatalf("testregistry: serve %s: %v", localImage, err)
	}

	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serveHTTP))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testregistry: listen: %v", err)
	}
	r.srv.Listener.Close()
	r.srv.Listener = ln
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.connections.Add(1)
		}
	}
	r.srv.Start()
	r.host = ln.Addr().String()

	tb.Cleanup(func() {
		r.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, ref := range []string{r.Ref(), r.DigestRef()} {
			_, err := c.ImageRemove(ctx, ref, client.ImageRemoveOptions{})
			if err != nil && !cerrdefs.IsNotFound(err) {
				tb.Errorf("testregistry: cleanup: remove image %s: %v", ref, err)
			}
		}
	})
	return r
}

var (
	repoPattern = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagPattern  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// Host returns "127.0.0.1:<port>".
func (r *Registry) Host() string { return r.host }

// Ref returns "127.0.0.1:<port>/<repo>:<tag>", the reference to pull.
func (r *Registry) Ref() string { return r.host + "/" + r.repo + ":" + r.tag }

// Repo returns "127.0.0.1:<port>/<repo>", for references to tags the
// registry does not have.
func (r *Registry) Repo() string { return r.host + "/" + r.repo }

// DigestRef returns "127.0.0.1:<port>/<repo>@<manifest digest>".
func (r *Registry) DigestRef() string { return r.host + "/" + r.repo + "@" + r.manifestDigest }

// ManifestDigest returns the served manifest's digest ("sha256:...").
func (r *Registry) ManifestDigest() string { return r.manifestDigest }

// ConfigDigest returns the served image's config digest, which is the ID
// the daemon gives the image once pulled.
func (r *Registry) ConfigDigest() string {
	var m struct {
		Config struct{ Digest string }
	}
	_ = json.Unmarshal(r.manifest, &m)
	return m.Config.Digest
}

// SetDown makes every request answer 503 Service Unavailable (with a
// registry-style UNAVAILABLE error) while down is true.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// RequireBasicAuth makes every request (from the next on) need HTTP basic
// authentication as user:password: otherwise 401 with a Basic challenge,
// which the Docker daemon answers with the pull's credential. This is the
// private registry of the pull tests; our own small registry rather than
// go-containerregistry's or Debian's docker-registry, because neither can
// be fetched on the test machines and a basic-auth check is a few lines.
func (r *Registry) RequireBasicAuth(user, password string) {
	r.basicAuth.Store(&[2]string{user, password})
}

// Requests returns the number of HTTP requests received so far (answered
// or not, down or not).
func (r *Registry) Requests() int { return int(r.requests.Load()) }

// Connections returns the number of TCP connections accepted so far. It
// also counts contacts that never became an HTTP request (such as a TLS
// probe), so 0 means the registry was not contacted at all.
func (r *Registry) Connections() int { return int(r.connections.Load()) }

// Stop closes the server; later pulls fail with "connection refused". It is
// safe to call more than once and is called when the test ends.
func (r *Registry) Stop() {
	r.stopOnce.Do(r.srv.Close)
}

// load exports the image and prepares the manifest and blobs.
func (r *Registry) load(ctx context.Context, c *client.Client, localImage string) error {
	rc, err := c.ImageSave(ctx, []string{localImage})
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer rc.Close()
	config, layers, err := readSave(rc)
	if err != nil {
		return err
	}
	config, err = addLabel(config, LabelKey, randomHex())
	if err != nil {
		return err
	}

	type descriptor struct {
		MediaType string `json:"mediaType"`
		Size      int    `json:"size"`
		Digest    string `json:"digest"`
	}
	manifest := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{SchemaVersion: 2, MediaType: MediaTypeManifest, Layers: []descriptor{}}

	manifest.Config = descriptor{MediaTypeConfig, len(config), digestOf(config)}
	r.blobs[manifest.Config.Digest] = config
	for i, l := range layers {
		gz, err := gzipped(l)
		if err != nil {
			return fmt.Errorf("compress layer %d: %w", i, err)
		}
		d := descriptor{MediaTypeLayer, len(gz), digestOf(gz)}
		manifest.Layers = append(manifest.Layers, d)
		r.blobs[d.Digest] = gz
	}
	r.manifest, err = json.MarshalIndent(manifest, "", "   ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	r.manifestDigest = digestOf(r.manifest)
	return nil
}

// readSave reads a `docker save` archive holding one image and returns its
// config and its layers (uncompressed tars, or gzip blobs as stored), base
// first. It reads manifest.json, which both the legacy format (<id>.json,
// <dir>/layer.tar) and the OCI layout of newer engines (blobs/sha256/...)
// carry; symbolic links between entries are followed.
func readSave(r io.Reader) (config []byte, layers [][]byte, err error) {
	files := map[string][]byte{}
	links := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("read save archive: %w", err)
		}
		name := path.Clean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, fmt.Errorf("read save archive %s: %w", name, err)
			}
			files[name] = b
		case tar.TypeSymlink:
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			links[name] = path.Clean(strings.TrimPrefix(target, "/"))
		case tar.TypeLink:
			links[name] = path.Clean(hdr.Linkname)
		}
	}
	get := func(name string) ([]byte, error) {
		name = path.Clean(name)
		for range 16 {
			if b, ok := files[name]; ok {
				return b, nil
			}
			target, ok := links[name]
			if !ok {
				break
			}
			name = target
		}
		return nil, fmt.Errorf("save archive: no file %s", name)
	}

	mb, err := get("manifest.json")
	if err != nil {
		return nil, nil, err
	}
	var entries []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(mb, &entries); err != nil {
		return nil, nil, fmt.Errorf("save archive manifest.json: %w", err)
	}
	if len(entries) != 1 {
		return nil, nil, fmt.Errorf("save archive holds %d images, want 1", len(entries))
	}
	if config, err = get(entries[0].Config); err != nil {
		return nil, nil, err
	}
	for _, l := range entries[0].Layers {
		b, err := get(l)
		if err != nil {
			return nil, nil, err
		}
		layers = append(layers, b)
	}
	return config, layers, nil
}

// addLabel sets config.Labels[key] = value in an image config, keeping
// every other field as it was.
func addLabel(config []byte, key, value string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(config, &doc); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	var cc map[string]json.RawMessage
	if raw, ok := doc["config"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &cc); err != nil {
			return nil, fmt.Errorf("image config .config: %w", err)
		}
	}
	if cc == nil {
		cc = map[string]json.RawMessage{}
	}
	labels := map[string]string{}
	if raw, ok := cc["Labels"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &labels); err != nil {
			return nil, fmt.Errorf("image config labels: %w", err)
		}
	}
	labels[key] = value
	var err error
	if cc["Labels"], err = json.Marshal(labels); err != nil {
		return nil, err
	}
	if doc["config"], err = json.Marshal(cc); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
}

// gzipped returns b gzip-compressed, or b itself when it already is.
func gzipped(b []byte) ([]byte, error) {
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		return b, nil
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// serveHTTP answers the read-only part of the Registry API v2.
func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.down.Load() {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "registry is down (testregistry.SetDown)")
		return
	}
	if cred := r.basicAuth.Load(); cred != nil {
		user, pass, ok := req.BasicAuth()
		if !ok || user != cred[0] || pass != cred[1] {
			w.Header().Set("WWW-Authenticate", `Basic realm="testregistry"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the test registry is read-only")
		return
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		http.NotFound(w, req)
		return
	}
	if name, ref, ok := cutLast(rest, "/manifests/"); ok {
		if name != r.repo || (ref != r.tag && ref != r.manifestDigest) {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		serveContent(w, req, MediaTypeManifest, r.manifestDigest, r.manifest)
		return
	}
	if name, dgst, ok := cutLast(rest, "/blobs/"); ok {
		blob, found := r.blobs[dgst]
		if name != r.repo || !found {
			writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
			return
		}
		serveContent(w, req, "application/octet-stream", dgst, blob)
		return
	}
	writeError(w, http.StatusNotFound, "UNSUPPORTED", "the test registry serves manifests and blobs only")
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func serveContent(w http.ResponseWriter, req *http.Request, mediaType, digest string, b []byte) {
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Etag", `"`+digest+`"`)
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(b))
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"code": code, "message": message, "detail": nil}},
	})
}
