package dockertest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Main runs a package's tests (call it from TestMain as
// os.Exit(dockertest.Main(m))) and then sweeps: it force-removes every
// container, and every network, labelled TestLabel=RunID() — this process's
// own, and nothing else — that a test's own cleanup left behind (a test
// that failed before registering its cleanup, a process-level leak).
//
// A run that hits go test's -timeout panics and never returns from m.Run,
// so Main also arms the sweep to run 20 s before that deadline: the
// package's remaining tests then fail on their vanished containers, but the
// daemon is left clean. Sweep problems are printed to stderr; they do not
// change the exit code.
func Main(m *testing.M) int {
	flag.Parse()
	var once sync.Once
	sweep := func() { once.Do(func() { Sweep(os.Stderr.WriteString) }) }
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > time.Minute {
			t := time.AfterFunc(d-20*time.Second, sweep)
			defer t.Stop()
		}
	}
	code := m.Run()
	sweep()
	return code
}

// Sweep force-removes the containers and networks labelled
// TestLabel=RunID(). It reports what it did and what failed through say
// (nothing when there was nothing to do); it never touches anything without
// that exact label.
func Sweep(say func(string) (int, error)) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return // no daemon: nothing can have been left on it
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	label := TestLabel + "=" + runID
	f := make(client.Filters).Add("label", label)
	list, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		say(fmt.Sprintf("dockertest sweep: list containers labelled %s: %v\n", label, err))
		return
	}
	removed := 0
	for _, ctr := range list.Items {
		if ctr.Labels[TestLabel] != runID {
			continue
		}
		_, err := c.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			say(fmt.Sprintf("dockertest sweep: remove container %s: %v\n", ctr.ID, err))
			continue
		}
		removed++
	}
	nets, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		say(fmt.Sprintf("dockertest sweep: list networks labelled %s: %v\n", label, err))
	}
	for _, n := range nets.Items {
		if n.Labels[TestLabel] != runID {
			continue
		}
		if _, err := c.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			say(fmt.Sprintf("dockertest sweep: remove network %s: %v\n", n.Name, err))
			continue
		}
		removed++
	}
	if removed > 0 {
		say(fmt.Sprintf("dockertest sweep: removed %d containers/networks a test of this run (%s) left behind\n", removed, label))
	}
}
