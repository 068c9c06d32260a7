package http

// The list endpoints' query: filters of GET /v1/instances, cursor
// pagination of GET /v1/fleet/instances.

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"

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

// writeList answers a list with its next cursor, if any.
func writeList(w http.ResponseWriter, list []*dtma.Instance, next string) {
	body := newInstanceList(list)
	body.NextCursor = next
	writeJSON(w, http.StatusOK, body)
}
