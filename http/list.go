package http

// The list endpoints' query: filters of GET /v1/instances, cursor
// pagination of GET /v1/fleet/instances.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"

	"github.com/agentopia/dtma"
)

// maxPageLimit is the most rows one page of the fleet list holds.
const maxPageLimit = 1000

// statuses are the words ?status= accepts.
var statuses = map[dtma.Status]bool{
	dtma.StatusDeploying: true, dtma.StatusStarting: true, dtma.StatusStopping: true, dtma.StatusRestarting: true,
	dtma.StatusRemoving: true, dtma.StatusRunning: true, dtma.StatusStopped: true, dtma.StatusMissing: true,
	dtma.StatusCrashLoop: true, dtma.StatusError: true,
}

// filterInstances keeps the instances matching the query's status (a
// dtma_status word) and name (exact); either absent matches all. EINVALID
// naming the parameter for an unknown status or a repeated parameter.
func filterInstances(list []*dtma.Instance, q url.Values) ([]*dtma.Instance, error) {
	status, err := single(q, "status")
	if err != nil {
		return nil, err
	}
	name, err := single(q, "name")
	if err != nil {
		return nil, err
	}
	if status != "" && !statuses[dtma.Status(status)] {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "status", "unknown status %q (one of deploying, starting, stopping, restarting, removing, running, stopped, missing, crashloop, error)", status)
	}
	if status == "" && !q.Has("name") {
		return list, nil
	}
	out := list[:0:0]
	for _, inst := range list {
		if (status == "" || string(inst.Status) == status) && (!q.Has("name") || inst.Name == name) {
			out = append(out, inst)
		}
	}
	return out, nil
}

// single returns the query parameter key, EINVALID when it is repeated.
func single(q url.Values, key string) (string, error) {
	if len(q[key]) > 1 {
		return "", dtma.FieldErrorf(dtma.EINVALID, key, "given more than once")
	}
	return q.Get(key), nil
}

// page returns one page of list: the rows whose id sorts after cursor
// ("" starts at the beginning), at most limit of them (0: all), in id
// order, and the cursor of the next page ("" on the last). Ids never
// change and are unique across hosts, so paging while rows are added or
// removed never repeats a row and never skips one that existed throughout:
// a row added behind the cursor is seen by the next full listing, not this
// one. EINVALID naming limit or cursor when they do not parse.
func page(list []*dtma.Instance, q url.Values) ([]*dtma.Instance, string, error) {
	limitS, err := single(q, "limit")
	if err != nil {
		return nil, "", err
	}
	cursor, err := single(q, "cursor")
	if err != nil {
		return nil, "", err
	}
	limit := 0
	if limitS != "" {
		if limit, err = strconv.Atoi(limitS); err != nil || limit < 1 || limit > maxPageLimit {
			return nil, "", dtma.FieldErrorf(dtma.EINVALID, "limit", "must be a whole number from 1 to %d", maxPageLimit)
		}
	}
	if cursor != "" && !dtma.IsUUID(cursor) {
		return nil, "", dtma.FieldErrorf(dtma.EINVALID, "cursor", "not a cursor this list gave out")
	}
	if limit == 0 && cursor == "" {
		return list, "", nil // the whole list, in the order it always had
	}
	sorted := append([]*dtma.Instance(nil), list...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	start := sort.Search(len(sorted), func(i int) bool { return sorted[i].ID > cursor })
	sorted = sorted[start:]
	if limit == 0 || len(sorted) <= limit {
		return sorted, "", nil
	}
	return sorted[:limit], sorted[limit-1].ID, nil
}

// fleetPager is implemented by a service that reads one page of the
// fleet list from the registry (agent.Agent); others are paged in memory
// by page.
type fleetPager interface {
	ListFleetPage(ctx context.Context, after string, limit int) ([]*dtma.Instance, error)
}

// fleetPage answers one page through the service's fleetPager: it asks
// for one row more than limit to know whether a next page exists.
func fleetPage(ctx context.Context, p fleetPager, q url.Values) ([]*dtma.Instance, string, error) {
	limit, _ := strconv.Atoi(q.Get("limit")) // checked by page
	ask := limit
	if limit > 0 {
		ask = limit + 1
	}
	list, err := p.ListFleetPage(ctx, q.Get("cursor"), ask)
	if err != nil {
		return nil, "", err
	}
	if limit > 0 && len(list) > limit {
		return list[:limit], list[limit-1].ID, nil
	}
	return list, "", nil
}

// writeList answers a list with its next cursor, if any.
func writeList(w http.ResponseWriter, list []*dtma.Instance, next string) {
	body := newInstanceList(list)
	body.NextCursor = next
	writeJSON(w, http.StatusOK, body)
}

// rowCache keeps the JSON of each of this host's rows as last encoded, so
// that a list of a thousand rows costs the encoding of the rows that
// changed since the previous list, not of all of them. An entry is reused
// only for the same Revision of its row (the agent gives every change of a
// row a new one) and the same Health (the prober's live status is laid
// over the row without a new Revision); a row without a Revision (0: not
// from the agent's view) is encoded every time. Entries are updated in
// place: a list of unchanged rows allocates nothing here but its answer.
type rowCache struct {
	mu   sync.Mutex
	gen  uint64                // of the latest list
	rows map[string]*cachedRow // by instance id
}

type cachedRow struct {
	rev    uint64            // the row's Revision the JSON is of
	health dtma.HealthStatus // and its Health
	json   []byte            // never changed in place: a list may still be writing it
	gen    uint64            // the latest list that held the row
}

// encode returns the JSON of each row (as writeJSON would write it, without
// the newline), from the cache where the row is unchanged. The cache then
// holds exactly these rows. The slices returned are never changed.
func (c *rowCache) encode(list []*dtma.Instance) [][]byte {
	out := make([][]byte, len(list))
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	encode := func(inst *dtma.Instance) []byte {
		buf.Reset()
		_ = enc.Encode(NewInstance(inst))
		return bytes.TrimSuffix(bytes.Clone(buf.Bytes()), []byte("\n"))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rows == nil {
		c.rows = make(map[string]*cachedRow, len(list))
	}
	c.gen++
	for i, inst := range list {
		if inst.Revision == 0 {
			out[i] = encode(inst)
			continue
		}
		e := c.rows[inst.ID]
		if e == nil {
			e = &cachedRow{}
			c.rows[inst.ID] = e
		}
		if e.json == nil || e.rev != inst.Revision || e.health != inst.Health {
			e.json, e.rev, e.health = encode(inst), inst.Revision, inst.Health
		}
		e.gen = c.gen
		out[i] = e.json
	}
	if len(c.rows) > len(list) { // rows gone since the previous list
		for id, e := range c.rows {
			if e.gen != c.gen {
				delete(c.rows, id)
			}
		}
	}
	return out
}

// writeEncodedList answers {"instances": [rows...]} from encoded rows,
// written through a small buffer rather than assembled whole.
func writeEncodedList(w http.ResponseWriter, rows [][]byte) {
	n := len(`{"instances":[]}`) + 1
	for _, r := range rows {
		n += len(r) + 1
	}
	if len(rows) > 0 {
		n-- // no comma before the first row
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	const chunk = 32 << 10
	buf := make([]byte, 0, chunk)
	buf = append(buf, `{"instances":[`...)
	for i, r := range rows {
		if i > 0 {
			buf = append(buf, ',')
		}
		if len(buf)+len(r) > chunk {
			if _, err := w.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
			if len(r) > chunk {
				if _, err := w.Write(r); err != nil {
					return
				}
				continue
			}
		}
		buf = append(buf, r...)
	}
	buf = append(buf, "]}\n"...)
	_, _ = w.Write(buf)
}
