package main

// Start-up mode (go run ./bench -startup 100,1000,5000): how the agent's
// start-up and registry rebuild grow with the number of containers, on
// containers that are not running.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentopia/dtma"
	"github.com/moby/moby/client"
)

// startupResult is what one N of the start-up mode measured.
type startupResult struct {
	n         int
	populate  time.Duration // the N-1 raw containers: create, start, stop
	engineAll time.Duration // raw: list the host's containers + inspect each, 16 at once
	rebuild   time.Duration // registry deleted → serving, fully observed
	rows      int
	dupes     int // rows naming a container (or an instance name) another row names
	unknown   int // bench containers no row names
	notStop   int // rows not desired stopped
	rss, hwm  float64
	killReady time.Duration // SIGKILL → serving, fully observed
	rowsKill  int
	started   int // containers whose StartedAt moved while the agent ran
	running   int // containers running at the end
}

// startupWidth is how many raw containers are made at once.
const startupWidth = 8

// startup measures one N: one template instance is deployed through the
// agent and stopped through it; the agent is killed; N-1 containers with
// the template's configuration and the agent's labels (each its own
// instance name and id) are made through the Engine API, started once and
// stopped (a created container that never started and that no row knows
// is, for the agent, what is left of an interrupted deploy: it removes it
// rather than adopt it); then the registry is deleted and the agent started
// (rebuild: N rows adopted), then SIGKILLed and started again.
func (b *bench) startup(ctx context.Context, n int) (*startupResult, error) {
	r := &startupResult{n: n}
	a, err := b.startAgent(ctx)
	if err != nil {
		return nil, err
	}
	defer a.kill()
	step := func(s string) { fmt.Fprintf(os.Stderr, "bench: startup N=%d: %s\n", n, s) }

	step("template instance: deploy and stop through the agent")
	prefix := fmt.Sprintf("su-%s-%d-", b.runID, b.runs)
	tmplName := prefix + "tmpl"
	if err := a.deploy(ctx, tmplName, b.image, false); err != nil {
		return nil, err
	}
	if err := expect(a.do(ctx, "POST", "/v1/instances/"+tmplName+"/stop", nil, nil)); err != nil {
		return nil, fmt.Errorf("stop the template instance: %w", err)
	}
	var tmpl struct {
		ContainerID  string `json:"container_id"`
		DesiredState string `json:"desired_state"`
		DockerStatus string `json:"docker_status"`
	}
	if err := expect(a.do(ctx, "GET", "/v1/instances/"+tmplName, nil, &tmpl)); err != nil || tmpl.ContainerID == "" {
		return nil, fmt.Errorf("the template instance's container: %v", err)
	}
	if tmpl.DesiredState != string(dtma.DesiredStopped) || tmpl.DockerStatus != string(dtma.DockerExited) {
		return nil, fmt.Errorf("template instance after stop: desired %s, docker %s", tmpl.DesiredState, tmpl.DockerStatus)
	}
	m, err := b.mirrorConfig(ctx, tmpl.ContainerID)
	if err != nil {
		return nil, err
	}
	if m.labels[dtma.LabelHost] != a.hostID || m.labels[BenchLabel] != b.runID {
		return nil, fmt.Errorf("template container labels: %v", m.labels)
	}
	// The agent is down while the others are made: a running agent would
	// adopt them one by one as their events arrive.
	a.kill()

	step(fmt.Sprintf("%d containers through the Engine API (create, start, stop; %d at once)", n-1, startupWidth))
	var done atomic.Int64
	t := time.Now()
	err = parallel(n-1, startupWidth, func(i int) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		name := fmt.Sprintf("%s%d", prefix, i)
		labels := make(map[string]string, len(m.labels))
		for k, v := range m.labels {
			labels[k] = v
		}
		labels[dtma.LabelInstance] = name
		labels[dtma.LabelInstanceID] = dtma.NewUUID()
		res, err := b.docker.ContainerCreate(ctx, m.options(dtma.ContainerName(name), labels))
		if err != nil {
			return fmt.Errorf("raw create: %w", err)
		}
		if _, err := b.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
			return fmt.Errorf("raw start: %w", err)
		}
		secs := 10
		if _, err := b.docker.ContainerStop(ctx, res.ID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
			return fmt.Errorf("raw stop: %w", err)
		}
		if d := done.Add(1); d%500 == 0 {
			step(fmt.Sprintf("%d made, %.0f s", d, time.Since(t).Seconds()))
		}
		return nil
	})
	r.populate = time.Since(t)
	if err != nil {
		return nil, err
	}

	// The raw side: what listing and inspecting every container costs
	// Docker, 16 at once (as the agent's full observation does).
	t = time.Now()
	before, err := b.startedAt(ctx, a.hostID)
	if err != nil {
		return nil, err
	}
	r.engineAll = time.Since(t)
	if len(before) != n {
		return nil, fmt.Errorf("%d containers labelled for the host, want %d", len(before), n)
	}

	step("registry deleted, agent started (rebuild)")
	for _, f := range []string{"dtma.db", "dtma.db-wal", "dtma.db-shm"} {
		if err := os.Remove(filepath.Join(a.dataDir, f)); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	if err := a.start(); err != nil {
		return nil, err
	}
	if r.rebuild, err = a.ready(ctx, 10*time.Minute); err != nil {
		return nil, err
	}
	r.rss, r.hwm = a.rssMB(), a.hwmMB()
	step("Go memory after the rebuild (MiB): " + a.memBreakdown(ctx))
	if r.rows, err = b.checkRows(ctx, a, before, r); err != nil {
		return nil, err
	}

	step("SIGKILL and restart")
	a.kill()
	if err := a.start(); err != nil {
		return nil, err
	}
	if r.killReady, err = a.ready(ctx, 10*time.Minute); err != nil {
		return nil, err
	}
	if r.rowsKill, err = b.checkRows(ctx, a, before, r); err != nil {
		return nil, err
	}

	after, err := b.startedAt(ctx, a.hostID)
	if err != nil {
		return nil, err
	}
	for id, s := range before {
		if after[id] != s {
			r.started++
		}
	}
	running := make(client.Filters).Add("label", "dtma.host="+a.hostID).Add("status", "running")
	list, err := b.docker.ContainerList(ctx, client.ContainerListOptions{Filters: running})
	if err != nil {
		return nil, err
	}
	r.running = len(list.Items)
	return r, nil
}

// checkRows lists the agent's rows and counts, into r, the rows naming a
// container or a name another row names, the containers of containers no
// row names, and the rows not desired stopped. It returns the row count.
func (b *bench) checkRows(ctx context.Context, a *agentProc, containers map[string]string, r *startupResult) (int, error) {
	var list struct {
		Instances []struct {
			Name         string `json:"name"`
			ContainerID  string `json:"container_id"`
			DesiredState string `json:"desired_state"`
		} `json:"instances"`
	}
	if err := expect(a.do(ctx, "GET", "/v1/instances", nil, &list)); err != nil {
		return 0, fmt.Errorf("list instances: %w", err)
	}
	byContainer, byName := map[string]int{}, map[string]int{}
	for _, in := range list.Instances {
		byContainer[in.ContainerID]++
		byName[in.Name]++
		if in.DesiredState != string(dtma.DesiredStopped) {
			r.notStop++
		}
	}
	for _, k := range byContainer {
		r.dupes += k - 1
	}
	for _, k := range byName {
		r.dupes += k - 1
	}
	for id := range containers {
		if byContainer[id] == 0 {
			r.unknown++
		}
	}
	return len(list.Instances), nil
}

// renderStartup returns the Markdown table of the start-up mode, one
// column per N.
func renderStartup(rs []*startupResult) string {
	var sb strings.Builder
	sb.WriteString("N containers created, not running (one template instance deployed and stopped through the agent; the other N−1 " +
		"created through the Engine API with its configuration and the agent's labels, each its own instance name and id, " +
		"started once and stopped while the agent was down: the agent removes, rather than adopts, a container that never " +
		"started and that no row knows, which is what an interrupted deploy leaves).\n\n")
	row := tableRows(&sb, rs, func(r *startupResult) int { return r.n })
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	row("registry deleted → rebuilt, fully observed (rows adopted)", "≤ 5 s, N", func(r *startupResult) string {
		return fmt.Sprintf("%s (%d)", sec(r.rebuild), r.rows)
	})
	row("SIGKILL → serving with a full observation (rows)", "≤ 2 s, N", func(r *startupResult) string {
		return fmt.Sprintf("%s (%d)", sec(r.killReady), r.rowsKill)
	})
	row("raw Engine API: list + inspect every container, 16 at once", "–", func(r *startupResult) string { return sec(r.engineAll) })
	row("RSS after the rebuild (peak)", "≤ 30 MB", func(r *startupResult) string {
		return fmt.Sprintf("%.1f MB (%.1f MB)", r.rss, r.hwm)
	})
	row("duplicate rows / containers without a row / rows not desired stopped (after the rebuild + after the restart)", "0 / 0 / 0", func(r *startupResult) string {
		return fmt.Sprintf("%d / %d / %d", r.dupes, r.unknown, r.notStop)
	})
	row("tools started by the agent (StartedAt moved; running at the end)", "0 (0)", func(r *startupResult) string {
		return fmt.Sprintf("%d (%d)", r.started, r.running)
	})
	row("making the N−1 containers (create, start, stop; 8 at once)", "–", func(r *startupResult) string { return sec(r.populate) })
	return sb.String()
}
