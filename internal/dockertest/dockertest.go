// Package dockertest holds helpers for tests that need a real Docker daemon:
// a client that skips (or fails on CI) when no daemon answers, the echo test
// image built from internal/testimage/echo, a per-process run id and
// label-scoped cleanup. It is imported only by _test files.
//
// Every container (and network) a test creates must carry the label
// TestLabel=RunID() and be registered for removal with Cleanup; nothing
// else is ever removed.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// TestLabel is the label key every test container carries; its value is the
// run id of the test process that created it (RunID).
const TestLabel = "dtma.test"

// EchoImageRepo is the repository of the echo test image; the tag is the
// first 12 hex digits of the SHA-256 of the echo binary.
const EchoImageRepo = "dtma-test-echo"

// MCPImageRepo is the repository of the MCP fixture image (MCPImage).
const MCPImageRepo = "dtma-test-mcp"

// testimagePkg is the import path of the test programs' parent directory.
const testimagePkg = "github.com/agentopia/dtma/internal/testimage/"

// Client returns a Docker client (DOCKER_HOST or the default socket, API
// version negotiated) after pinging the daemon. When the daemon does not
// answer it fails the test if env CI=true and skips it otherwise. The client
// is closed when the test ends.
func Client(tb testing.TB) *client.Client {
	tb.Helper()
	c, err := client.New(client.FromEnv)
	if err != nil {
		unavailable(tb, fmt.Errorf("new docker client: %w", err))
	}
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		unavailable(tb, fmt.Errorf("ping docker daemon at %s: %w", c.DaemonHost(), err))
	}
	return c
}

func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("docker is required on CI (CI=true) but unavailable: %v", err)
	}
	tb.Skipf("docker unavailable, skipping: %v", err)
}

// runID is this test process's random run id, fixed at package
// initialisation and never modified afterwards.
var runID = newRunID()

func newRunID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("dockertest: random run id: %v", err))
	}
	return hex.EncodeToString(b)
}

// RunID returns a random id (12 hex digits) that is the same for every call
// within this test process and differs between processes. Label test
// containers TestLabel=RunID().
func RunID() string { return runID }

// Labels returns {TestLabel: RunID()}, the labels every test container of
// this process carries.
func Labels() map[string]string { return map[string]string{TestLabel: runID} }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago (the
// kernel picked it for a listener that is closed again), for publishing a
// test container's port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Cleanup registers a tb.Cleanup that force-removes every container (running
// or not) carrying exactly the label key=value given as label ("dtma.test=<run
// id>"), and only those. Removal failures are reported with tb.Errorf.
//
// The removal runs when tb ends. With parallel tests, register it on a
// parent test whose parallel subtests create the containers (its cleanup
// runs after them all), or give each test its own label value (for example
// RunID()+"-"+name): a cleanup must not remove containers a still-running
// test is using.
func Cleanup(tb testing.TB, c *client.Client, label string) {
	tb.Helper()
	if label == "" || !strings.Contains(label, "=") {
		tb.Fatalf("dockertest.Cleanup: label must be key=value, got %q", label)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, err := c.ContainerList(ctx, client.ContainerListOptions{
			All:     true,
			Filters: make(client.Filters).Add("label", label),
		})
		if err != nil {
			tb.Errorf("cleanup: list containers labelled %s: %v", label, err)
			return
		}
		key, value, _ := strings.Cut(label, "=")
		for _, ctr := range list.Items {
			if v, ok := ctr.Labels[key]; !ok || v != value {
				continue // belt and braces: never touch anything else
			}
			_, err := c.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				tb.Errorf("cleanup: remove container %s: %v", ctr.ID, err)
			}
		}
		if err := RemoveNetworks(ctx, c, label); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
}

// RemoveNetworks removes every network carrying all of the labels given
// (each "key=value"; at least one), and only those: the networks an agent
// under test made carry the test label and its dtma.host. A network still
// in use by a container is reported.
func RemoveNetworks(ctx context.Context, c *client.Client, labels ...string) error {
	if len(labels) == 0 {
		return errors.New("remove networks: no label given")
	}
	f := make(client.Filters)
	for _, l := range labels {
		f = f.Add("label", l)
	}
	list, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return fmt.Errorf("list networks labelled %s: %w", strings.Join(labels, ","), err)
	}
	var errs []error
	for _, n := range list.Items {
		mine := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if got, ok := n.Labels[k]; !ok || got != v {
				mine = false // belt and braces: never touch anything else
			}
		}
		if !mine {
			continue
		}
		if _, err := c.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// echoImage memoizes EchoImage within this process: the first call builds
// (or finds) the image, later and concurrent calls wait for it and reuse its
// result. It is the package's only mutable state; it is written once, under
// its sync.Once, and the result is idempotent (same source, same tag).
var echoImage struct {
	once sync.Once
	tag  string
	err  error
}

// EchoImage returns the tag ("dtma-test-echo:<12 hex>") of a FROM scratch
// image running the echo program of internal/testimage/echo, building the
// binary and the image when needed. An image already carrying that tag is
// reused, so repeated runs and parallel test packages share one image;
// concurrent builds by other processes are serialised with a file lock in
// the temp directory. The image is labelled dtma.test=1. Fails the test
// when Docker is unavailable (see Client) or the build fails.
func EchoImage(tb testing.TB) string {
	tb.Helper()
	c := Client(tb)
	echoImage.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		echoImage.tag, echoImage.err = buildImage(ctx, c, "echo", EchoImageRepo)
	})
	if echoImage.err != nil {
		tb.Fatalf("echo test image: %v", echoImage.err)
	}
	return echoImage.tag
}

var mcpImage struct {
	once sync.Once
	tag  string
	err  error
}

// MCPImage returns the tag ("dtma-test-mcp:<12 hex>") of a FROM scratch
// image running the MCP fixture server of internal/testimage/mcp, built
// and shared like EchoImage's.
func MCPImage(tb testing.TB) string {
	tb.Helper()
	c := Client(tb)
	mcpImage.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		mcpImage.tag, mcpImage.err = buildImage(ctx, c, "mcp", MCPImageRepo)
	})
	if mcpImage.err != nil {
		tb.Fatalf("mcp test image: %v", mcpImage.err)
	}
	return mcpImage.tag
}

// buildImage compiles the program internal/testimage/<prog> and makes sure
// an image <repo>:<binary hash> exists.
func buildImage(ctx context.Context, c *client.Client, prog, repo string) (string, error) {
	bin, err := buildBinary(ctx, prog)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	tag := repo + ":" + hex.EncodeToString(sum[:])[:12]

	if ok, err := imageExists(ctx, c, tag); err != nil || ok {
		return tag, err
	}

	// Serialise with other test processes building the same tag.
	unlock, err := lockFile(filepath.Join(os.TempDir(), repo+"-"+hex.EncodeToString(sum[:])[:12]+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if ok, err := imageExists(ctx, c, tag); err != nil || ok {
		return tag, err
	}

	buildCtx, err := buildContext(bin, prog)
	if err != nil {
		return "", err
	}
	res, err := c.ImageBuild(ctx, bytes.NewReader(buildCtx), client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{TestLabel: "1"},
		Version:     build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	buildErr := drainBuildOutput(res.Body)
	if buildErr == nil {
		return tag, nil
	}
	// Another process (without our lock, e.g. a manual build) may have won.
	if ok, _ := imageExists(ctx, c, tag); ok {
		return tag, nil
	}
	return "", fmt.Errorf("build image %s: %w", tag, buildErr)
}

// buildBinary builds the test program prog statically and returns its bytes.
func buildBinary(ctx context.Context, prog string) ([]byte, error) {
	dir, err := sourceDir(ctx, prog)
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "dtma-"+prog+"-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(out)
	binPath := filepath.Join(out, prog)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binPath, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", testimagePkg+prog, err, b)
	}
	return os.ReadFile(binPath)
}

// sourceDir finds internal/testimage/<prog>: next to this source file when
// the path is known (tests are not built with -trimpath), else via go list.
func sourceDir(ctx context.Context, prog string) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "..", "testimage", prog)
		if _, err := os.Stat(filepath.Join(dir, "main.go")); err == nil {
			return dir, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", testimagePkg+prog).Output()
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", testimagePkg+prog, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// buildContext returns an in-memory tar holding the Dockerfile and the
// binary.
func buildContext(bin []byte, prog string) ([]byte, error) {
	dockerfile := "FROM scratch\nCOPY " + prog + " /" + prog + "\nENTRYPOINT [\"/" + prog + "\"]\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte(dockerfile)},
		{prog, 0o755, bin},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// drainBuildOutput reads the classic builder's JSON message stream to the
// end and returns the first error it reports.
func drainBuildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var firstErr error
	var tail []string // last lines of output, for context in errors
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		if s := strings.TrimSpace(msg.Stream); s != "" {
			tail = append(tail, s)
			if len(tail) > 10 {
				tail = tail[1:]
			}
		}
		if firstErr == nil {
			switch {
			case msg.ErrorDetail != nil && msg.ErrorDetail.Message != "":
				firstErr = errors.New(msg.ErrorDetail.Message)
			case msg.Error != "":
				firstErr = errors.New(msg.Error)
			}
		}
	}
	if firstErr != nil && len(tail) > 0 {
		return fmt.Errorf("%w (output: %s)", firstErr, strings.Join(tail, " | "))
	}
	return firstErr
}

func imageExists(ctx context.Context, c *client.Client, ref string) (bool, error) {
	_, err := c.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspect image %s: %w", ref, err)
	}
}

// lockFile takes an exclusive flock on path (creating it) and returns the
// function that releases it. Each call opens its own descriptor, so it also
// excludes other goroutines of this process.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
