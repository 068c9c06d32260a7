package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/dockertest"
)

// lockedBuffer is a bytes.Buffer safe for the attach goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttach: a stdio container is created with stdin open (kept open
// across attaches) and no TTY; Attach gives its stdout only (stderr goes to
// the writer), writes reach its stdin, and after a detach the container runs
// on and can be attached to again. A container not running, or not made
// for stdio, is ECONFLICT.
func TestAttach(t *testing.T) {
	f := newRTFixture(t)
	image := dockertest.MCPStdioImage(t)
	host := rtHostID(t)
	name := "dtma-test-" + dockertest.RunID() + "-attach"
	ctx := context.Background()
	id, err := f.rt.CreateContainer(ctx, dtma.ContainerConfig{Name: name, Image: image, Labels: rtLabels(host, name), Stdio: true})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	ins, err := f.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := ins.Container.Config; !cfg.OpenStdin || cfg.StdinOnce || cfg.Tty {
		t.Errorf("config OpenStdin %v StdinOnce %v Tty %v; want true false false", cfg.OpenStdin, cfg.StdinOnce, cfg.Tty)
	}
	_, err = f.rt.Attach(ctx, id, nil)
	wantCode(t, "attach to a created container", err, dtma.ECONFLICT)
	f.start(t, id)

	var stderr lockedBuffer
	rw, err := f.rt.Attach(ctx, id, &stderr)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	r := bufio.NewReader(rw)
	send := func(line string) string {
		t.Helper()
		if _, err := rw.Write([]byte(line + "\n")); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return got
	}
	if got := send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`); !strings.Contains(got, `"mcpstdio"`) {
		t.Fatalf("initialize answered %q", got)
	}
	rw.Write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"))
	// garbage writes "garbage: zzz" to stdout and "stderr: zzz" to stderr.
	first := send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"garbage","arguments":{"text":"zzz"}}}`)
	second, _ := r.ReadString('\n')
	if first != "garbage: zzz\n" || !strings.Contains(second, `"id":2`) {
		t.Errorf("stdout gave %q then %q", first, second)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "stderr: zzz") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := stderr.String(); !strings.Contains(s, "stderr: zzz") || strings.Contains(s, "jsonrpc") {
		t.Errorf("stderr writer got %q", s)
	}
	rw.Close()

	if c := f.inspect(t, id); c.State != dtma.DockerRunning {
		t.Fatalf("after detach the container is %s", c.State)
	}
	rw2, err := f.rt.Attach(ctx, id, nil)
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	defer rw2.Close()
	rw2.Write([]byte(`{"jsonrpc":"2.0","id":3,"method":"ping"}` + "\n"))
	got, err := bufio.NewReader(rw2).ReadString('\n')
	if err != nil || !strings.Contains(got, `"id":3`) {
		t.Errorf("ping after re-attach: %q, %v", got, err)
	}

	echo, _, _ := f.create(t, host, "-echo", nil)
	f.start(t, echo)
	_, err = f.rt.Attach(ctx, echo, nil)
	wantCode(t, "attach to a non-stdio container", err, dtma.ECONFLICT)
}
