package main

// Fleet mode (-fleet N): N real agents with distinct host ids on one
// throw-away PostgreSQL (max_connections = 100), each with a few
// containers.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/agentopia/dtma/postgres"
)

// fleetPoolBudget is each agent's PostgreSQL pool (DTMA_REGISTRY_MAX_CONNS)
// in fleet mode: 50 agents × 1 = 50 of max_connections = 100, leaving
// room for the superuser reserve (3), operators and the bench itself.
const fleetPoolBudget = 1

// fleetResult is what fleet mode measured.
type fleetResult struct {
	agents, perAgent                 int
	connsIdle, connsBurst, connsPeak int
	txIdle, txBurst                  float64 // transactions/s
	writesIdle                       int64   // rows inserted/updated/deleted while idle
	burstWall                        time.Duration
	burstOK, burstN                  int
	fleetRows                        int
	firstPageP50, fullListP50        time.Duration
	restartRecovered                 int
	restartWall                      time.Duration
	rowsAfterRestart                 int
	idleWindow                       time.Duration
}

// pgStats reads the database's commit count, row writes and connections.
func pgStats(ctx context.Context, dsn string) (xacts, writes int64, conns int, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close(ctx)
	// Row writes of the registry table only: the database's totals also
	// count the catalogs (autovacuum's ANALYZE rewrites pg_statistic).
	err = conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback,
		COALESCE((SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'dtma_container_registry'), 0),
		(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid())
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&xacts, &writes, &conns)
	// The stats of this connection's own transaction are not counted
	// until it ends: the counts are a little behind, alike before and after.
	return xacts, writes, conns, err
}

// runFleet starts n agents on one PostgreSQL and measures them.
func (b *bench) runFleet(ctx context.Context, n, perAgent int, idle time.Duration) (*fleetResult, error) {
	r := &fleetResult{agents: n, perAgent: perAgent, idleWindow: idle}
	step := func(s string) { fmt.Fprintf(os.Stderr, "bench: fleet of %d: %s\n", n, s) }
	step("starting PostgreSQL")
	pg, err := pgtest.StartServer()
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	if err := pg.Exec(ctx, "ALTER SYSTEM SET max_connections = 100"); err != nil {
		return nil, err
	}
	if err := pg.RestartServer(); err != nil {
		return nil, err
	}
	if err := pg.Exec(ctx, "CREATE DATABASE fleet"); err != nil {
		return nil, err
	}
	dsn := pg.DSN("fleet")

	step("starting agents")
	agents := make([]*agentProc, n)
	for i := range agents {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		b.runs++
		a := &agentProc{bin: b.bin, dataDir: filepath.Join(b.dir, fmt.Sprintf("fleet-%d", i)),
			hostID: fmt.Sprintf("bench-%s-fleet-%d", b.runID, i), label: b.runID, port: port,
			env: []string{"DTMA_REGISTRY_URL=" + dsn, "DTMA_REGISTRY_MAX_CONNS=" + strconv.Itoa(fleetPoolBudget),
				// Each agent its own port range: 20 ports apiece.
				fmt.Sprintf("DTMA_PORT_RANGE=%d-%d", 46000+20*i, 46000+20*i+19)}}
		if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
			return nil, err
		}
		if err := a.start(); err != nil {
			return nil, err
		}
		agents[i] = a
		defer a.kill()
	}
	for _, a := range agents {
		if _, err := a.ready(ctx, 3*time.Minute); err != nil {
			return nil, err
		}
	}

	// A deploy burst: every agent deploys its instances at once.
	step("deploy burst")
	x0, _, _, err := pgStats(ctx, dsn)
	if err != nil {
		return nil, err
	}
	var ok atomic.Int64
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() { // connections in use during the burst
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, _, c, err := pgStats(ctx, dsn); err == nil && int64(c) > peak.Load() {
				peak.Store(int64(c))
			}
		}
	}()
	t := time.Now()
	r.burstN = n * perAgent
	parallel(n*perAgent, 20, func(i int) error {
		a := agents[i%n]
		if err := a.deploy(ctx, fmt.Sprintf("fleet-tool-%d", i/n), b.image, false); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return err
		}
		ok.Add(1)
		return nil
	})
	r.burstWall = time.Since(t)
	close(stop)
	x1, _, c1, err := pgStats(ctx, dsn)
	if err != nil {
		return nil, err
	}
	r.burstOK, r.txBurst, r.connsBurst, r.connsPeak = int(ok.Load()), float64(x1-x0)/r.burstWall.Seconds(), c1, int(peak.Load())

	step("idle")
	time.Sleep(10 * time.Second) // the burst's last events settle first
	x0, w0, _, err := pgStats(ctx, dsn)
	if err != nil {
		return nil, err
	}
	time.Sleep(idle)
	x1, w1, c2, err := pgStats(ctx, dsn)
	if err != nil {
		return nil, err
	}
	r.txIdle, r.writesIdle, r.connsIdle = float64(x1-x0)/idle.Seconds(), w1-w0, c2

	// 10k synthetic rows of other hosts, inserted directly.
	step("10k fleet rows")
	if err := insertSynthetic(ctx, dsn, 10000-n*perAgent); err != nil {
		return nil, err
	}
	var list struct {
		Instances  []any  `json:"instances"`
		NextCursor string `json:"next_cursor"`
	}
	if err := expect(agents[0].do(ctx, "GET", "/v1/fleet/instances", nil, &list)); err != nil {
		return nil, err
	}
	r.fleetRows = len(list.Instances)
	if r.firstPageP50, err = timeIt(30, func() error {
		return expect(agents[0].do(ctx, "GET", "/v1/fleet/instances?limit=100", nil, nil))
	}); err != nil {
		return nil, err
	}
	if r.fullListP50, err = timeIt(5, func() error {
		return expect(agents[0].do(ctx, "GET", "/v1/fleet/instances", nil, nil))
	}); err != nil {
		return nil, err
	}

	step("PostgreSQL restart")
	t = time.Now()
	if err := pg.RestartServer(); err != nil {
		return nil, err
	}
	// Every agent must read and write again: a deploy on each.
	var recovered atomic.Int64
	parallel(n, 10, func(i int) error {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			code, err := agents[i].do(ctx, "POST", "/v1/instances", map[string]any{"name": "after-restart", "image": b.image}, nil)
			if err == nil && (code == http.StatusCreated || code == http.StatusOK) {
				recovered.Add(1)
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("agent %d: no deploy within 2 minutes of the restart", i)
	})
	r.restartWall, r.restartRecovered = time.Since(t), int(recovered.Load())
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var rows int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM dtma_container_registry WHERE host_id LIKE $1`,
		"bench-"+b.runID+"-fleet-%").Scan(&rows); err != nil {
		return nil, err
	}
	r.rowsAfterRestart = rows
	return r, nil
}

// insertSynthetic inserts k rows of 100 made-up hosts through the
// PostgreSQL registry, in batches.
func insertSynthetic(ctx context.Context, dsn string, k int) error {
	for h := 0; h < 100 && k > 0; h++ {
		reg, err := postgres.Open(ctx, dsn, "synthetic-"+strconv.Itoa(h), postgres.Options{MaxConns: 1})
		if err != nil {
			return err
		}
		per := (k + 99 - h) / (100 - h)
		var batch []*dtma.Instance
		for i := 0; i < per; i++ {
			spec := dtma.Spec{Image: "example/tool:1", Env: map[string]string{"A": "x"}, Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}}}
			name := fmt.Sprintf("synthetic-%d-%d", h, i)
			batch = append(batch, &dtma.Instance{Name: name, ContainerName: "dtma-" + strings.ToLower(name), Spec: spec, SpecHash: spec.Hash(),
				Ports:        []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31000 + i}},
				DesiredState: dtma.DesiredRunning, Status: dtma.StatusRunning, Tracking: dtma.TrackLabel,
				Observed: dtma.Observed{DockerStatus: dtma.DockerRunning, ContainerID: fmt.Sprintf("%064d", h*100000+i), StartedAt: time.Now().UTC()}})
		}
		err = reg.CreateInstances(ctx, batch)
		reg.Close()
		if err != nil {
			return fmt.Errorf("synthetic rows: %w", err)
		}
		k -= per
	}
	return nil
}

// renderFleet returns the fleet table.
func renderFleet(r *fleetResult) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nFleet: %d agents (distinct host ids) on one PostgreSQL 15 (max_connections = 100), %d instances each; pool budget %d connection per agent.\n\n",
		r.agents, r.perAgent, fleetPoolBudget)
	sb.WriteString("| what | measured |\n|---|---|\n")
	fmt.Fprintf(&sb, "| connections used: idle / after the burst / peak during it | %d / %d / %d of 100 |\n", r.connsIdle, r.connsBurst, r.connsPeak)
	fmt.Fprintf(&sb, "| deploy burst (concurrency 20 across agents): success, wall | %d/%d, %.1f s |\n", r.burstOK, r.burstN, r.burstWall.Seconds())
	fmt.Fprintf(&sb, "| transactions/s: idle / during the burst | %.1f / %.1f |\n", r.txIdle, r.txBurst)
	fmt.Fprintf(&sb, "| registry rows written by idle agents in %s (10 s after the burst) | %d |\n", r.idleWindow, r.writesIdle)
	fmt.Fprintf(&sb, "| `GET /v1/fleet/instances?limit=100` at %d rows, p50 | %s |\n", r.fleetRows, ms(r.firstPageP50))
	fmt.Fprintf(&sb, "| `GET /v1/fleet/instances` (all %d rows), p50 | %s |\n", r.fleetRows, ms(r.fullListP50))
	fmt.Fprintf(&sb, "| PostgreSQL restarted: agents deploying again / wall | %d of %d / %.1f s |\n", r.restartRecovered, r.agents, r.restartWall.Seconds())
	fmt.Fprintf(&sb, "| agents' rows after the restart (want %d) | %d |\n", r.agents*(r.perAgent+1), r.rowsAfterRestart)
	return sb.String()
}
