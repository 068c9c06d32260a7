package http

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// fleetService serves a fleet whose rows the test changes between pages.
type fleetService struct {
	fakeService
	mu   sync.Mutex
	rows map[string]*dtma.Instance
}

func (f *fleetService) ListFleet(context.Context) ([]*dtma.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*dtma.Instance, 0, len(f.rows))
	for _, r := range f.rows {
		out = append(out, r.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name }) // not id order
	return out, nil
}

func (f *fleetService) add(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < n; i++ {
		id := dtma.NewUUID()
		f.rows[id] = &dtma.Instance{ID: id, HostID: fmt.Sprintf("host-%d", i%50), Name: "tool-" + id[:8], Status: dtma.StatusRunning}
	}
}

// pagingFleet is a fleetService that pages itself (as the agent does, in
// the registry).
type pagingFleet struct{ *fleetService }

func (p pagingFleet) ListFleetPage(ctx context.Context, after string, limit int) ([]*dtma.Instance, error) {
	all, _ := p.ListFleet(ctx)
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	var out []*dtma.Instance
	for _, inst := range all {
		if inst.ID > after && (limit == 0 || len(out) < limit) {
			out = append(out, inst)
		}
	}
	return out, nil
}

// The fleet list pages by cursor: while rows are added and removed between
// pages, no row is returned twice, and every row that existed from the
// first page to the last is returned once — paged in memory or by the
// service.
func TestFleetCursorPagination(t *testing.T) {
	t.Run("in memory", func(t *testing.T) {
		svc := &fleetService{rows: map[string]*dtma.Instance{}}
		testFleetPages(t, svc, svc)
	})
	t.Run("by the service", func(t *testing.T) {
		svc := &fleetService{rows: map[string]*dtma.Instance{}}
		testFleetPages(t, svc, pagingFleet{svc})
	})
}

func testFleetPages(t *testing.T, svc *fleetService, served dtma.InstanceService) {
	svc.add(230)
	h := (&Server{Service: served, Tokens: []string{"tok"}, AuthFailureLimit: -1}).Handler()
	get := func(path string) (int, InstanceList, string) {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body InstanceList
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body, rec.Body.String()
	}
	throughout := map[string]bool{}
	for id := range svc.rows {
		throughout[id] = true
	}
	seen := map[string]int{}
	cursor, pages := "", 0
	for {
		path := "/v1/fleet/instances?limit=25"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		code, body, raw := get(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, raw)
		}
		if len(body.Instances) > 25 {
			t.Fatalf("page of %d rows, limit 25", len(body.Instances))
		}
		for _, inst := range body.Instances {
			seen[inst.ID]++
		}
		pages++
		if body.NextCursor == "" || pages > 100 {
			break
		}
		// A page that has a next one is full: a short page is the last.
		if len(body.Instances) != 25 {
			t.Errorf("page %d: %d rows and a next cursor; want 25", pages, len(body.Instances))
		}
		cursor = body.NextCursor
		// Between pages: rows come and go, before and after the cursor.
		svc.mu.Lock()
		n := 0
		for id := range svc.rows {
			if n == 3 {
				break
			}
			delete(svc.rows, id)
			delete(throughout, id)
			n++
		}
		svc.mu.Unlock()
		svc.add(4)
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("row %s returned %d times", id, n)
		}
	}
	for id := range throughout {
		if seen[id] != 1 {
			t.Errorf("row %s, present on every page, returned %d times", id, seen[id])
		}
	}
	// How many pages depends on where the rows that come and go fall
	// (random ids, before or after the cursor): from 9 (every deleted row
	// ahead of the cursor, every new one behind it) to 11 (the reverse).
	if pages < 9 || pages > 11 {
		t.Errorf("%d pages for 230+ rows at 25 a page", pages)
	}

	// Without limit or cursor: the whole list, as before.
	if code, body, _ := get("/v1/fleet/instances"); code != http.StatusOK || len(body.Instances) != len(svc.rows) || body.NextCursor != "" {
		t.Errorf("whole list: %d, %d rows of %d, next %q", code, len(body.Instances), len(svc.rows), body.NextCursor)
	}
	for _, bad := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=1001", "limit"}, {"limit=x", "limit"}, {"cursor=nope", "cursor"}, {"limit=1&limit=2", "limit"},
	} {
		code, _, raw := get("/v1/fleet/instances?" + bad.query)
		var e struct {
			Error struct{ Code, Field string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(raw), &e)
		if code != http.StatusBadRequest || e.Error.Code != dtma.EINVALID || e.Error.Field != bad.field {
			t.Errorf("?%s: %d %s; want 400 on %s", bad.query, code, raw, bad.field)
		}
	}
}

// GET /v1/instances filters by ?status= and ?name=; an unknown status is a
// 400 naming the parameter.
func TestListFilters(t *testing.T) {
	svc := &fakeService{list: []*dtma.Instance{
		{ID: "1", Name: "a", Status: dtma.StatusRunning},
		{ID: "2", Name: "b", Status: dtma.StatusStopped},
		{ID: "3", Name: "c d", Status: dtma.StatusRunning},
	}}
	h := (&Server{Service: svc, Tokens: []string{"tok"}, AuthFailureLimit: -1}).Handler()
	for query, want := range map[string]string{
		"":                           "a,b,c d",
		"?status=running":            "a,c d",
		"?name=b":                    "b",
		"?name=c%20d&status=running": "c d",
		"?name=b&status=running":     "",
		"?name=":                     "",
	} {
		req := httptest.NewRequest("GET", "/v1/instances"+query, nil)
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body InstanceList
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		got := ""
		for i, inst := range body.Instances {
			if i > 0 {
				got += ","
			}
			got += inst.Name
		}
		if rec.Code != http.StatusOK || got != want {
			t.Errorf("GET /v1/instances%s: %d %q; want %q", query, rec.Code, got, want)
		}
	}
	req := httptest.NewRequest("GET", "/v1/instances?status=sleeping", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !json.Valid(rec.Body.Bytes()) || !strings.Contains(rec.Body.String(), `"field":"status"`) {
		t.Errorf("unknown status: %d %s; want 400 naming status", rec.Code, rec.Body.String())
	}
	if len(svc.list) != 3 {
		t.Errorf("filtering changed the service's list")
	}
}

// The list is served from encoded rows: its body is exactly what encoding
// the whole list gives, also after rows change (status, ports, observation:
// each a new Revision, as the agent's view gives), after the prober's live
// health changes on a row of the same Revision, and as rows come and go.
// Rows without a Revision are encoded every time; a row is encoded again
// only for a new Revision or Health.
func TestListEncodedRowsFollowChanges(t *testing.T) {
	var rev uint64
	mk := func(i int) *dtma.Instance {
		rev++
		return &dtma.Instance{ID: dtma.NewUUID(), HostID: "h", Name: fmt.Sprintf("tool-%d", i), Status: dtma.StatusRunning, Revision: rev,
			Spec:  dtma.Spec{Image: "img", Env: map[string]string{"A": "secret"}, Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp"}}},
			Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 31000 + i}}}
	}
	svc := &fakeService{}
	for i := 0; i < 5; i++ {
		svc.list = append(svc.list, mk(i))
	}
	h := (&Server{Service: svc, Tokens: []string{"tok"}, AuthFailureLimit: -1}).Handler()
	check := func(step string) {
		t.Helper()
		req := httptest.NewRequest("GET", "/v1/instances", nil)
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want, _ := json.Marshal(newInstanceList(svc.list))
		var got, wantV any
		_ = json.Unmarshal(want, &wantV)
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %v %s", step, rec.Code, err, rec.Body.String())
		}
		if g, w := fmt.Sprint(got), fmt.Sprint(wantV); g != w {
			t.Errorf("%s: list\n%s\nwant\n%s", step, g, w)
		}
		if strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("%s: an env value in the list", step)
		}
		if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("%s: Content-Length %s, body of %d bytes", step, cl, rec.Body.Len())
		}
	}
	check("first")
	check("unchanged")
	next := make([]*dtma.Instance, len(svc.list))
	for i, inst := range svc.list {
		next[i] = inst.Clone()
	}
	next[1].Status = dtma.StatusStopped
	next[1].Observed.DockerStatus = dtma.DockerExited
	next[2].Ports[0].HostPort = 32000
	next[3].LastError = "boom"
	for _, i := range []int{1, 2, 3} {
		rev++
		next[i].Revision = rev
	}
	next = append(next[:4], mk(9)) // row 4 gone, a new one
	svc.list = next
	check("changed")
	// The prober's live status over an unchanged row.
	svc.list[0].Spec.Health = dtma.HealthCheck{Type: dtma.CheckTCP}
	rev++
	svc.list[0].Revision = rev
	check("check added")
	svc.list[0].Health = dtma.HealthStatus{State: dtma.HealthHealthy, LastLatency: 3 * time.Millisecond}
	check("health overlaid")
	svc.list[0].Health.LastLatency = 5 * time.Millisecond
	check("latency changed")
	// Without a Revision a row is encoded every time.
	svc.list[1].Revision = 0
	check("no revision")
	svc.list[1].LastError = "changed without a revision"
	check("no revision, changed")
	// The cache is what answers: the same Revision is the same JSON, even
	// for a value changed behind the view's back (which the agent never does).
	before := svc.list[2].LastError
	svc.list[2].LastError = "changed under the same revision"
	req := httptest.NewRequest("GET", "/v1/instances", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if strings.Contains(rec.Body.String(), "changed under the same revision") || !strings.Contains(rec.Body.String(), before) {
		t.Errorf("a row of an unchanged revision was encoded again: %s", rec.Body.String())
	}
	svc.list[2].LastError = before
	svc.list = svc.list[:0]
	check("empty")
	for i := 10; i < 300; i++ { // an answer written in several pieces
		svc.list = append(svc.list, mk(i))
	}
	check("many")
}
