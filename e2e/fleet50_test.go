package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/internal/dockertest"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// The fleet of TestFleetFifty: how many agents, how many instances each,
// and each agent's PostgreSQL pool (DTMA_REGISTRY_MAX_CONNS), the budget
// `go run ./bench -fleet 50` runs with and BENCHMARKS documents for a
// fleet of fifty on one server.
const (
	f50Agents   = 50
	f50PerAgent = 2
	f50Budget   = 1
	// f50MaxConns is PostgreSQL's default max_connections (pgtest's
	// servers have more), which the fleet must fit with room to spare.
	f50MaxConns = 100
)

// f50Conns returns how many sessions the agents hold on the test's
// database (their application_name starts with prefix: each agent's is
// its host id), how many client sessions the whole server has, and a
// description of the sessions of any agent holding more than the budget.
// Only the agents' sessions are counted as theirs: the test's own, closed
// a moment ago, may still be ending on a loaded machine.
func f50Conns(ctx context.Context, dsn, prefix string) (agents, server int, over string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, "", err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `WITH agent AS (
			SELECT * FROM pg_stat_activity WHERE datname = current_database() AND starts_with(application_name, $1))
		SELECT (SELECT count(*) FROM agent),
			(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()),
			COALESCE((SELECT string_agg(format('%s pid %s port %s started %s state %s since %s: %s', application_name, pid, client_port,
					backend_start::time, state, state_change::time, left(query, 80)), E'\n' ORDER BY application_name, backend_start)
				FROM agent WHERE application_name IN (SELECT application_name FROM agent GROUP BY 1 HAVING count(*) > $2)), '')`,
		prefix, f50Budget).Scan(&agents, &server, &over)
	return agents, server, over, err
}

// f50Writes returns the rows inserted, updated and deleted so far in the
// test database's own tables (the registry and its migrations; the
// catalogs, which autovacuum writes, are left out), as far as the
// sessions have flushed their statistics: PostgreSQL 15 flushes a
// session's counts at the end of a transaction at most once a second,
// and an idle session's pending counts 10 s later.
func f50Writes(ctx context.Context, dsn string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn) // a new session: no cached snapshot of the stats
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables`).Scan(&n)
	return n, err
}

// f50Snapshot returns every registry row as JSON, prefixed by its
// version (xmin: a new one for every insert or update), by id.
func f50Snapshot(ctx context.Context, dsn string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id::text, xmin::text || ' ' || to_jsonb(r)::text FROM dtma_container_registry r`)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var id, row string
		if err := rows.Scan(&id, &row); err != nil {
			return nil, err
		}
		out[id] = row
	}
	return out, rows.Err()
}

// f50Diff describes the rows that differ between two snapshots.
func f50Diff(before, after map[string]string) string {
	var out []string
	for id, row := range after {
		if b, ok := before[id]; !ok {
			out = append(out, "added "+row)
		} else if b != row {
			out = append(out, "was "+b+"\nnow "+row)
		}
	}
	for id, row := range before {
		if _, ok := after[id]; !ok {
			out = append(out, "removed "+row)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// f50Each runs f(i) for i in [0, n), width at a time, and returns the
// errors, joined, in the order of i.
func f50Each(n, width int, f func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	var out []string
	for _, err := range errs {
		if err != nil {
			out = append(out, err.Error())
		}
	}
	if len(out) == 0 {
		return nil
	}
	return fmt.Errorf("%d failed:\n%s", len(out), strings.Join(out, "\n"))
}

// f50Deploy deploys name on a (no ports: nothing to allocate) and returns
// the instance. A 503 (registry unavailable) is tried again until
// deadline (counted in unavailable); any other answer but 201 is an error.
func f50Deploy(a *Agent, img, name string, deadline time.Time, unavailable *atomic.Int64) (dtmahttp.Instance, error) {
	var inst dtmahttp.Instance
	for {
		status, body, err := rcTry(a.URL, "POST", "/v1/instances", map[string]any{"name": name, "image": img}, 2*time.Minute)
		switch {
		case err == nil && status == 201:
			return inst, json.Unmarshal(body, &inst)
		case err == nil && status != 503:
			return inst, fmt.Errorf("%s: deploy %s: status %d %s", a.HostID, name, status, body)
		case time.Now().After(deadline):
			tail := a.Logs()
			if len(tail) > 3000 {
				tail = tail[len(tail)-3000:]
			}
			return inst, fmt.Errorf("%s: deploy %s: still %d %s (%v) at the deadline; log tail:\n%s", a.HostID, name, status, body, err, tail)
		}
		unavailable.Add(1)
		time.Sleep(250 * time.Millisecond)
	}
}

// f50Page fetches every page of the fleet list from a with ?limit=limit
// and checks each page's shape: at most limit rows, in id order, after
// the cursor, a next cursor exactly when rows follow.
func f50Page(a *Agent, limit int) ([]dtmahttp.Instance, error) {
	var all []dtmahttp.Instance
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > f50Agents*(f50PerAgent+1)+1 {
			return nil, fmt.Errorf("%s: more pages than rows", a.HostID)
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		status, body, err := rcTry(a.URL, "GET", "/v1/fleet/instances?"+q.Encode(), nil, time.Minute)
		if err != nil || status != 200 {
			return nil, fmt.Errorf("%s: page after %q: %d %s %v", a.HostID, cursor, status, body, err)
		}
		var page dtmahttp.InstanceList
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("%s: page: %v", a.HostID, err)
		}
		if len(page.Instances) > limit || (page.NextCursor != "" && len(page.Instances) != limit) {
			return nil, fmt.Errorf("%s: page after %q has %d rows (limit %d), next %q", a.HostID, cursor, len(page.Instances), limit, page.NextCursor)
		}
		for i, inst := range page.Instances {
			if inst.ID <= cursor || (i > 0 && inst.ID <= page.Instances[i-1].ID) {
				return nil, fmt.Errorf("%s: page after %q is not in id order after the cursor: %s", a.HostID, cursor, inst.ID)
			}
		}
		all = append(all, page.Instances...)
		if page.NextCursor == "" {
			return all, nil
		}
		if last := page.Instances[len(page.Instances)-1].ID; page.NextCursor != last {
			return nil, fmt.Errorf("%s: next cursor %q, last row %q", a.HostID, page.NextCursor, last)
		}
		cursor = page.NextCursor
	}
}

// f50CheckList compares a fleet listing with want (instance id -> host
// id/name): every instance exactly once, with its host id and name.
func f50CheckList(got []dtmahttp.Instance, want map[string]string) error {
	seen := map[string]bool{}
	var problems []string
	for _, inst := range got {
		key := inst.HostID + "/" + inst.Name
		switch {
		case seen[inst.ID]:
			problems = append(problems, "twice: "+key)
		case want[inst.ID] == "":
			problems = append(problems, "unknown: "+inst.ID+" "+key)
		case want[inst.ID] != key:
			problems = append(problems, fmt.Sprintf("%s is %s, want %s", inst.ID, key, want[inst.ID]))
		}
		seen[inst.ID] = true
	}
	for id, key := range want {
		if !seen[id] {
			problems = append(problems, "missing: "+id+" "+key)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%d rows listed, want %d: %s", len(got), len(want), strings.Join(problems, "; "))
	}
	return nil
}

// TestFleetFifty runs fifty agents (the real binary, distinct host ids) on
// one PostgreSQL with its default max_connections, two instances each: the
// agents' connections stay within the per-agent pool budget, idle and
// after a deploy burst; idle agents write nothing to the registry; every
// agent's fleet view (whole and paged) lists exactly every host's
// instances; and after a restart of PostgreSQL every agent deploys again,
// with no row lost. Nothing here is timed; `go run ./bench -fleet 50`
// measures.
func TestFleetFifty(t *testing.T) {
	if testing.Short() {
		t.Skip("fifty agents: not with -short")
	}
	t.Parallel()
	ctx := context.Background()
	t0 := time.Now()
	phase := func(s string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), s) }
	defer phase("end")
	img := EchoImage(t)
	srv := pgtest.Start(t) // its own server: this test restarts it
	if err := srv.Exec(ctx, "ALTER SYSTEM SET max_connections = "+strconv.Itoa(f50MaxConns)); err != nil {
		t.Fatalf("set max_connections: %v", err)
	}
	srv.Restart(t)
	dsn := srv.CreateDatabase(t, t.Name())

	// The budget leaves room: the superuser reserve and a few sessions of
	// operators and tools besides the fifty agents' pools.
	var maxConns, reserved int
	{
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		err = conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &reserved)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	budget := f50Budget * f50Agents
	if maxConns != f50MaxConns || budget+reserved+10 > maxConns {
		t.Fatalf("max_connections %d (reserved %d): the fleet's budget %d leaves no room", maxConns, reserved, budget)
	}
	hostPrefix := "e2e-" + dockertest.RunID() + "-f50-"
	checkConns := func(when string) {
		t.Helper()
		agents, server, over, err := f50Conns(ctx, dsn, hostPrefix)
		if err != nil {
			t.Fatalf("connections %s: %v", when, err)
		}
		t.Logf("connections %s: agents %d (budget %d), server %d of %d", when, agents, budget, server, maxConns)
		if agents > budget || server >= maxConns || over != "" {
			t.Errorf("connections %s: agents hold %d (budget %d × %d = %d), server %d of max_connections %d; agents over their budget of %d:\n%s",
				when, agents, f50Budget, f50Agents, budget, server, maxConns, f50Budget, over)
		}
	}

	opts := make([]AgentOptions, f50Agents)
	for i := range opts {
		// Each agent's sessions carry its host id as application_name.
		host := fmt.Sprintf("%s%02d", hostPrefix, i)
		opts[i] = AgentOptions{HostID: host, RegistryURL: dsn + "&application_name=" + host, Env: []string{
			"DTMA_REGISTRY_MAX_CONNS=" + strconv.Itoa(f50Budget),
			// Docker's default bridge: fifty agents' isolated networks
			// would take most of the subnet pool every e2e test shares.
			"DTMA_NETWORK=bridge",
			// Each agent relists twice within the idle window below.
			"DTMA_RESYNC_INTERVAL=5s",
			"DTMA_LOG_LEVEL=info",
			"DTMA_REGISTRY_CONNECT_TIMEOUT=2s", "DTMA_REGISTRY_STATEMENT_TIMEOUT=5s",
		}}
	}
	agents := StartAgents(t, 10, opts)
	phase("started")
	// Kill the agents, then remove their containers, side by side (after
	// the test, before the agents' own cleanups, which then find nothing
	// left), instead of one agent after the other.
	t.Cleanup(func() {
		_ = f50Each(len(agents), 10, func(i int) error { agents[i].Kill(); return nil })
		_ = f50Each(len(agents), 10, func(i int) error {
			removeContainers(agents[i].Docker, "label="+dockertest.TestLabel+"="+dockertest.RunID(), "label=dtma.host="+agents[i].HostID)
			return nil
		})
	})
	hosts := map[string]bool{}
	for _, a := range agents {
		if hosts[a.HostID] {
			t.Fatalf("two agents have host id %s", a.HostID)
		}
		hosts[a.HostID] = true
	}
	checkConns("with every agent started")

	// A deploy burst: every agent deploys its instances at once (more
	// registry calls at a time than its pool has connections), ten
	// deploys at a time across the fleet, while the connections are
	// watched.
	var peak atomic.Int64
	var overBurst atomic.Value // string: the first sessions of an agent over its budget
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			n, _, over, err := f50Conns(ctx, dsn, hostPrefix)
			if err == nil && int64(n) > peak.Load() {
				peak.Store(int64(n))
			}
			if over != "" {
				overBurst.CompareAndSwap(nil, over)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	want := map[string]string{} // instance id -> host/name
	var wantMu sync.Mutex
	deadline := time.Now().Add(3 * time.Minute)
	var unavailable atomic.Int64
	err := f50Each(f50Agents*f50PerAgent, 10, func(i int) error {
		a := agents[i/f50PerAgent]
		name := fmt.Sprintf("f50-tool-%d-%s", i%f50PerAgent, a.HostID)
		inst, err := f50Deploy(a, img, name, deadline, &unavailable)
		if err != nil {
			return err
		}
		if inst.HostID != a.HostID || inst.Name != name || inst.DockerStatus != "running" {
			return fmt.Errorf("%s: deployed %+v", a.HostID, inst)
		}
		wantMu.Lock()
		want[inst.ID] = a.HostID + "/" + name
		wantMu.Unlock()
		return nil
	})
	close(stop)
	<-watched
	phase("burst done")
	if err != nil {
		t.Fatalf("deploy burst: %v", err)
	}
	t.Logf("connections during the burst: peak %d (budget %d); deploys answered 503 first: %d", peak.Load(), budget, unavailable.Load())
	if p := int(peak.Load()); p > budget {
		t.Errorf("the agents held %d connections during the burst, budget %d × %d = %d", p, f50Budget, f50Agents, budget)
	}
	if n := unavailable.Load(); n > 0 {
		t.Errorf("%d deploys of the burst were answered 503 with PostgreSQL up", n)
	}
	if over, _ := overBurst.Load().(string); over != "" {
		t.Errorf("agents held more than %d connection(s) during the burst:\n%s", f50Budget, over)
	}
	checkConns("after the burst")

	// Idle: once the burst's last writes are in (no row version of the
	// registry has changed for 3 s), the agents write nothing for 20 s,
	// four relists of each, while every agent serves its fleet view. The
	// rows' versions (xmin) show every insert, update and delete at once;
	// the statistics' counts of written rows are compared over the last
	// 10 s only: a session may hold its counts up to 10 s before it
	// flushes them (PostgreSQL 15), so the first 10 s let the burst's
	// counts in.
	var snap0 map[string]string
	var since time.Time
	Eventually(t, time.Minute, "the registry writes of the burst to settle", func() bool {
		snap, err := f50Snapshot(ctx, dsn)
		if err != nil || snap0 == nil || f50Diff(snap0, snap) != "" {
			snap0, since = snap, time.Now()
			return false
		}
		return time.Since(since) >= 3*time.Second
	})
	settled := time.Now()
	phase("settled")

	// The fleet view from every agent: whole, and in pages of 7 from
	// every tenth.
	if len(want) != f50Agents*f50PerAgent {
		t.Fatalf("%d instances deployed, want %d", len(want), f50Agents*f50PerAgent)
	}
	if err := f50Each(f50Agents, 10, func(i int) error {
		status, body, err := rcTry(agents[i].URL, "GET", "/v1/fleet/instances", nil, time.Minute)
		if err != nil || status != 200 {
			return fmt.Errorf("%s: fleet list: %d %s %v", agents[i].HostID, status, body, err)
		}
		var list dtmahttp.InstanceList
		if err := json.Unmarshal(body, &list); err != nil {
			return err
		}
		if err := f50CheckList(list.Instances, want); err != nil {
			return fmt.Errorf("%s: fleet list: %v", agents[i].HostID, err)
		}
		for _, inst := range list.Instances {
			if inst.DockerStatus != "running" || inst.DTMAStatus != "running" {
				return fmt.Errorf("%s: fleet list: %s/%s is %s/%s", agents[i].HostID, inst.HostID, inst.Name, inst.DTMAStatus, inst.DockerStatus)
			}
		}
		if i%10 != 0 {
			return nil
		}
		paged, err := f50Page(agents[i], 7)
		if err != nil {
			return err
		}
		if err := f50CheckList(paged, want); err != nil {
			return fmt.Errorf("%s: fleet list in pages of 7: %v", agents[i].HostID, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("fleet view: %v", err)
	}
	// Each agent's own list holds its own two.
	for _, a := range []*Agent{agents[0], agents[f50Agents-1]} {
		if got := a.pgList("/v1/instances"); len(got) != f50PerAgent || got[0].HostID != a.HostID || got[1].HostID != a.HostID {
			t.Errorf("%s lists %v as its own", a.HostID, fleetHostNames(got))
		}
	}
	phase("listed")
	time.Sleep(time.Until(settled.Add(10 * time.Second))) // the burst's counts flushed; not a performance bound
	w0, err := f50Writes(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(settled.Add(20 * time.Second))) // the idle window; not a performance bound
	w1, err := f50Writes(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	snap1, err := f50Snapshot(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("registry rows written while idle: %d in the statistics (%d before, %d after)", w1-w0, w0, w1)
	if diff := f50Diff(snap0, snap1); diff != "" || w1 != w0 {
		t.Errorf("idle agents wrote to the registry: %d rows in the statistics' last 10 s; rows changed in 20 s:\n%s", w1-w0, diff)
	}
	checkConns("idle after the burst")
	rowsBefore := pgMustRows(t, dsn, "")
	if len(rowsBefore) != len(want) {
		t.Fatalf("%d rows before the restart, want %d", len(rowsBefore), len(want))
	}

	// PostgreSQL stops and starts again: every agent deploys again (503s
	// meanwhile are retried), and no row is lost.
	srv.Stop(t)
	agents[0].pgExpect503("GET", "/v1/fleet/instances", nil)
	srv.Restart(t)
	phase("restarted")
	deadline = time.Now().Add(3 * time.Minute)
	unavailable.Store(0)
	if err := f50Each(f50Agents, 10, func(i int) error {
		a := agents[i]
		name := "f50-after-restart-" + a.HostID
		inst, err := f50Deploy(a, img, name, deadline, &unavailable)
		if err != nil {
			return err
		}
		wantMu.Lock()
		want[inst.ID] = a.HostID + "/" + name
		wantMu.Unlock()
		return nil
	}); err != nil {
		t.Fatalf("deploys after the PostgreSQL restart: %v", err)
	}
	t.Logf("deploys after the restart answered 503 first: %d times", unavailable.Load())
	checkConns("after the restart's deploys")
	phase("redeployed")

	rowsAfter := pgMustRows(t, dsn, "")
	perHost := map[string]int{}
	after := map[string]pgRow{}
	for _, r := range rowsAfter {
		perHost[r.HostID]++
		after[r.ID] = r
	}
	for h := range hosts {
		if perHost[h] != f50PerAgent+1 {
			t.Errorf("host %s has %d rows after the restart, want %d", h, perHost[h], f50PerAgent+1)
		}
	}
	if len(rowsAfter) != f50Agents*(f50PerAgent+1) {
		t.Errorf("%d rows after the restart, want %d", len(rowsAfter), f50Agents*(f50PerAgent+1))
	}
	for _, r := range rowsBefore {
		got, ok := after[r.ID]
		if !ok || got.HostID != r.HostID || got.Name != r.Name || got.ContainerID != r.ContainerID || got.DockerStatus != r.DockerStatus {
			t.Errorf("row %s (%s/%s, container %s) after the restart: %+v", r.ID, r.HostID, r.Name, r.ContainerID, got)
		}
	}
	// The fleet view shows the new instances too.
	status, body, err := rcTry(agents[f50Agents/2].URL, "GET", "/v1/fleet/instances", nil, time.Minute)
	if err != nil || status != 200 {
		t.Fatalf("fleet list after the restart: %d %s %v", status, body, err)
	}
	var list dtmahttp.InstanceList
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if err := f50CheckList(list.Instances, want); err != nil {
		t.Errorf("fleet list after the restart: %v", err)
	}
}
