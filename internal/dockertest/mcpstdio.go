package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// MCPStdioImageRepo is the repository of the stdio MCP fixture image; the
// tag is the first 12 hex digits of the SHA-256 of its binary.
const MCPStdioImageRepo = "dtma-test-mcpstdio"

const mcpStdioPkg = "github.com/agentopia/dtma/internal/testimage/mcpstdio"

// mcpStdioImage memoizes MCPStdioImage within this process (like
// echoImage: written once under its sync.Once).
var mcpStdioImage struct {
	once sync.Once
	tag  string
	err  error
}

// MCPStdioImage returns the tag ("dtma-test-mcpstdio:<12 hex>") of a FROM
// scratch image running the stdio MCP server of
// internal/testimage/mcpstdio (ENTRYPOINT /mcpstdio), building it when
// needed, exactly as EchoImage does for the echo program. The image is
// labelled dtma.test=1.
func MCPStdioImage(tb testing.TB) string {
	tb.Helper()
	c := Client(tb)
	mcpStdioImage.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		mcpStdioImage.tag, mcpStdioImage.err = buildProgramImage(ctx, c, MCPStdioImageRepo, mcpStdioPkg, "mcpstdio")
	})
	if mcpStdioImage.err != nil {
		tb.Fatalf("mcpstdio test image: %v", mcpStdioImage.err)
	}
	return mcpStdioImage.tag
}

// buildProgramImage builds the Go program pkg (internal/testimage/<name>)
// statically and makes sure an image repo:<hash> running it as /<name>
// exists, serialised with other processes by a lock file.
func buildProgramImage(ctx context.Context, c *client.Client, repo, pkg, name string) (string, error) {
	dir, err := programSourceDir(ctx, pkg, name)
	if err != nil {
		return "", err
	}
	out, err := os.MkdirTemp("", "dtma-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(out)
	binPath := filepath.Join(out, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	tag := repo + ":" + hex.EncodeToString(sum[:])[:12]
	if ok, err := imageExists(ctx, c, tag); err != nil || ok {
		return tag, err
	}
	unlock, err := lockFile(filepath.Join(os.TempDir(), repo+"-"+hex.EncodeToString(sum[:])[:12]+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if ok, err := imageExists(ctx, c, tag); err != nil || ok {
		return tag, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /%s\nENTRYPOINT [\"/%s\"]\n", name, name, name)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {name, 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	res, err := c.ImageBuild(ctx, bytes.NewReader(buf.Bytes()), client.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true,
		Labels: map[string]string{TestLabel: "1"}, Version: build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	if err := drainBuildOutput(res.Body); err != nil {
		if ok, _ := imageExists(ctx, c, tag); ok {
			return tag, nil
		}
		return "", fmt.Errorf("build image %s: %w", tag, err)
	}
	return tag, nil
}

// programSourceDir finds internal/testimage/<name> next to this file, else
// through go list.
func programSourceDir(ctx context.Context, pkg, name string) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "..", "testimage", name)
		if _, err := os.Stat(filepath.Join(dir, "main.go")); err == nil {
			return dir, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", pkg, err)
	}
	return strings.TrimSpace(string(out)), nil
}
