package http

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// The dashboard's view models: what the templates in http/ui render.

// uiPage is the data of every full page.
type uiPage struct {
	Title   string
	Nav     string // the current section: instances, host
	CSRF    string // this session's CSRF token ("" on the login page)
	Message string // an error to show instead of the page's data
	Data    any
}

// uiStatusCount is one status chip at the top of the instances page.
type uiStatusCount struct {
	Status string
	Count  int
	Class  string
	Href   string
	Active bool
}

// uiColumn is a sortable column header.
type uiColumn struct {
	Key, Label string
	Href       string
	Sort       string // aria-sort: ascending, descending or none
}

// uiInstancesView is the instances page and its live partial.
type uiInstancesView struct {
	Total     int
	Counts    []uiStatusCount
	AllHref   string
	Filter    string
	Columns   []uiColumn
	Rows      []uiRow
	HasHealth bool   // a health column is shown only when health checks exist
	LiveURL   string // the partial the page refreshes
	Removed   string // name of an instance just removed, for a notice
}

// uiPortLink is a published port, linked when it is TCP.
type uiPortLink struct {
	Text string
	Href string
}

// uiRow is one instance.
type uiRow struct {
	ID, Name, Account, Image string
	Status, StatusClass      string
	Docker, DockerClass      string
	Desired, Pending         string
	Health                   string // "" until health checks exist
	Ports                    []uiPortLink
	Uptime                   string
	UptimeSeconds            int64
	Restarts                 int
	Drift                    bool
	DriftText                string
	LastError                string
	Href                     string
	StartedAt, ObservedAt    time.Time
	CreatedAt, UpdatedAt     time.Time
	FinishedAt               time.Time
	ExitCode                 int
	HostID, ContainerName    string
	ContainerID, Tracking    string
	Env                      []string
	RequestedPorts           []string
	Limits                   string
}

// uiInstanceView is the instance page and its live partial.
type uiInstanceView struct {
	uiRow
	LiveURL, ActionURL, LogsURL string
	// HealthHistory holds the last probes when health checks exist;
	// nil hides the section.
	HealthHistory []uiProbe
}

// uiProbe is one health probe (a hook for the health checks to come).
type uiProbe struct {
	At     time.Time
	OK     bool
	Detail string
}

// uiHostView is the host page and its live partial.
type uiHostView struct {
	Version, HostID          string
	RegistryKind             string
	RegistryOK               bool
	RegistryError            string
	DockerOK                 bool
	DockerError              string
	DockerVersion, DockerAPI string
	LastObservedAt           time.Time
	Metrics                  *dtma.SystemMetrics
	MetricsError             string
	Instances                int
	Fleet                    bool // the registry is shared (PostgreSQL)
	FleetRows                []uiRow
	FleetHosts               int
	FleetError               string
}

var uiStatusOrder = []string{"running", "deploying", "starting", "restarting", "stopping", "removing", "stopped", "missing", "crashloop", "error"}

// statusClass maps a dtma status to a colour class (always shown with
// its word).
func statusClass(status string) string {
	switch status {
	case "running":
		return "ok"
	case "stopped":
		return "idle"
	case "deploying", "starting", "restarting", "stopping", "removing":
		return "busy"
	case "missing":
		return "warn"
	}
	return "bad"
}

func dockerClass(state string) string {
	switch state {
	case "running":
		return "ok"
	case "created", "exited", "paused":
		return "idle"
	case "restarting":
		return "busy"
	case "unknown":
		return "idle"
	}
	return "bad"
}

// humanDuration is d as "3d 4h", "5h 2m", "4m 10s" or "12s".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh %dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm %ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

// linkHost is the host a browser should use for a port published on
// hostIP: the IP itself when it is a specific one, else the host the
// browser reached the dashboard on.
func linkHost(r *http.Request, hostIP string) string {
	if ip := net.ParseIP(hostIP); ip != nil && !ip.IsUnspecified() {
		return hostIP
	}
	h, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		h = r.Host
	}
	return strings.Trim(h, "[]")
}

func (d *dashboard) row(r *http.Request, inst *dtma.Instance, now time.Time) uiRow {
	w := NewInstance(inst)
	row := uiRow{
		ID: w.ID, Name: w.Name, Account: w.AccountID(), Image: w.Image,
		Status: w.DTMAStatus, StatusClass: statusClass(w.DTMAStatus),
		Docker: w.DockerStatus, DockerClass: dockerClass(w.DockerStatus),
		Desired: w.DesiredState, Pending: w.PendingOp,
		Restarts: w.RestartCount, Drift: w.Drift, ExitCode: w.ExitCode,
		Href:   "/ui/instances/" + url.PathEscape(w.ID),
		HostID: w.HostID, ContainerName: w.ContainerName, ContainerID: w.ContainerID, Tracking: w.Tracking,
		Env: w.Env, StartedAt: inst.StartedAt, ObservedAt: inst.ObservedAt, FinishedAt: inst.FinishedAt,
		CreatedAt: inst.CreatedAt, UpdatedAt: inst.UpdatedAt,
	}
	if w.LastError != nil {
		row.LastError = *w.LastError
	}
	if row.Drift {
		row.DriftText = "drift: Docker shows " + w.DockerStatus + ", wanted " + w.DesiredState
	}
	if w.DockerStatus == "running" && !inst.StartedAt.IsZero() {
		up := now.Sub(inst.StartedAt)
		row.Uptime, row.UptimeSeconds = humanDuration(up), int64(up/time.Second)
	}
	for _, p := range w.Ports {
		if p.HostPort == 0 {
			continue
		}
		proto := cmp.Or(p.Protocol, "tcp")
		text := strconv.Itoa(p.HostPort) + "→" + strconv.Itoa(p.ContainerPort) + "/" + proto
		link := uiPortLink{Text: text}
		if proto == "tcp" && r != nil {
			link.Href = "http://" + net.JoinHostPort(linkHost(r, p.HostIP), strconv.Itoa(p.HostPort)) + "/"
		}
		row.Ports = append(row.Ports, link)
	}
	for _, p := range w.RequestedPorts {
		s := strconv.Itoa(p.ContainerPort) + "/" + cmp.Or(p.Protocol, "tcp")
		if p.HostPort != 0 {
			s = strconv.Itoa(p.HostPort) + "→" + s
		}
		if p.HostIP != "" {
			s = p.HostIP + ":" + s
		}
		row.RequestedPorts = append(row.RequestedPorts, s)
	}
	if l := w.Limits; l != nil {
		var parts []string
		if l.Memory > 0 {
			parts = append(parts, "memory "+dtma.FormatMemory(l.Memory))
		}
		if l.PIDs > 0 {
			parts = append(parts, "pids "+strconv.FormatInt(l.PIDs, 10))
		}
		if l.CPUs > 0 {
			parts = append(parts, "cpus "+strconv.FormatFloat(l.CPUs, 'f', -1, 64))
		}
		row.Limits = strings.Join(parts, ", ")
	}
	return row
}

// uiSortKeys are the sortable columns, in display order.
var uiSortKeys = []struct{ Key, Label string }{
	{"name", "Name"}, {"account", "Account id"}, {"image", "Image"}, {"status", "Status"},
	{"docker", "Docker"}, {"uptime", "Uptime"}, {"restarts", "Restarts"},
}

// instancesView lists this host's instances filtered by ?status= and
// sorted by ?sort= (a column key, "-" first for descending).
func (d *dashboard) instancesView(r *http.Request) (*uiInstancesView, error) {
	list, err := d.s.Service.ListInstances(r.Context())
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	filter := q.Get("status")
	sortBy := q.Get("sort")
	desc := strings.HasPrefix(sortBy, "-")
	key := strings.TrimPrefix(sortBy, "-")
	if !slices.ContainsFunc(uiSortKeys, func(k struct{ Key, Label string }) bool { return k.Key == key }) {
		key, desc = "name", false
	}
	now := time.Now()
	v := &uiInstancesView{Total: len(list), Filter: filter}
	counts := map[string]int{}
	for _, inst := range list {
		row := d.row(r, inst, now)
		counts[row.Status]++
		if filter == "" || row.Status == filter {
			v.Rows = append(v.Rows, row)
		}
	}
	slices.SortStableFunc(v.Rows, func(a, b uiRow) int {
		var c int
		switch key {
		case "account":
			c = cmp.Compare(a.Account, b.Account)
		case "image":
			c = cmp.Compare(a.Image, b.Image)
		case "status":
			c = cmp.Compare(slices.Index(uiStatusOrder, a.Status), slices.Index(uiStatusOrder, b.Status))
		case "docker":
			c = cmp.Compare(a.Docker, b.Docker)
		case "uptime":
			c = cmp.Compare(a.UptimeSeconds, b.UptimeSeconds)
		case "restarts":
			c = cmp.Compare(a.Restarts, b.Restarts)
		}
		if c == 0 {
			c = cmp.Compare(a.Name, b.Name)
		}
		if desc {
			c = -c
		}
		return c
	})
	query := func(status, sort string) string {
		q := url.Values{}
		if status != "" {
			q.Set("status", status)
		}
		if sort != "" && sort != "name" {
			q.Set("sort", sort)
		}
		if len(q) == 0 {
			return "/ui/"
		}
		return "/ui/?" + q.Encode()
	}
	cur := key
	if desc {
		cur = "-" + key
	}
	v.AllHref = query("", cur)
	for _, st := range uiStatusOrder {
		if counts[st] == 0 && st != filter {
			continue
		}
		v.Counts = append(v.Counts, uiStatusCount{Status: st, Count: counts[st], Class: statusClass(st), Href: query(st, cur), Active: st == filter})
	}
	for _, k := range uiSortKeys {
		c := uiColumn{Key: k.Key, Label: k.Label, Sort: "none", Href: query(filter, k.Key)}
		if k.Key == key {
			if desc {
				c.Sort = "descending"
			} else {
				c.Sort, c.Href = "ascending", query(filter, "-"+k.Key)
			}
		}
		v.Columns = append(v.Columns, c)
	}
	live := url.Values{}
	if filter != "" {
		live.Set("status", filter)
	}
	if cur != "name" {
		live.Set("sort", cur)
	}
	v.LiveURL = "/ui/partials/instances"
	if len(live) > 0 {
		v.LiveURL += "?" + live.Encode()
	}
	return v, nil
}

func (d *dashboard) instanceView(r *http.Request, inst *dtma.Instance) *uiInstanceView {
	ref := url.PathEscape(inst.ID)
	return &uiInstanceView{
		uiRow:     d.row(r, inst, time.Now()),
		LiveURL:   "/ui/partials/instances/" + ref,
		ActionURL: "/ui/api/instances/" + ref,
		LogsURL:   "/ui/api/instances/" + ref + "/logs",
	}
}

func (d *dashboard) hostView(r *http.Request) *uiHostView {
	ctx := r.Context()
	h := d.s.Service.Health(ctx)
	v := &uiHostView{
		Version: cmp.Or(h.Version, d.s.Version), HostID: h.HostID,
		RegistryKind: cmp.Or(d.s.UI.RegistryKind, "unknown"),
		RegistryOK:   h.RegistryOK, RegistryError: h.RegistryError,
		DockerOK: h.DockerOK, DockerError: h.DockerError,
		LastObservedAt: h.LastObservedAt,
		Fleet:          d.s.UI.RegistryKind == "postgres",
	}
	if d.s.UI.DockerVersion != nil && h.DockerOK {
		vctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		v.DockerVersion, v.DockerAPI, _ = d.s.UI.DockerVersion(vctx)
		cancel()
	}
	if d.s.Metrics != nil {
		m, err := d.s.Metrics.SystemMetrics(ctx)
		if err != nil {
			v.MetricsError = dtma.ErrorMessage(err)
		} else {
			v.Metrics = &m
		}
	}
	if list, err := d.s.Service.ListInstances(ctx); err == nil {
		v.Instances = len(list)
	}
	if v.Fleet {
		list, err := d.s.Service.ListFleet(ctx)
		if err != nil {
			v.FleetError = dtma.ErrorMessage(err)
		}
		hosts := map[string]bool{}
		now := time.Now()
		for _, inst := range list {
			hosts[inst.HostID] = true
			row := d.row(r, inst, now)
			if inst.HostID != h.HostID {
				row.Href = "" // another host's instance: no page here
				for i := range row.Ports {
					row.Ports[i].Href = ""
				}
			}
			v.FleetRows = append(v.FleetRows, row)
		}
		slices.SortStableFunc(v.FleetRows, func(a, b uiRow) int {
			return cmp.Or(cmp.Compare(a.HostID, b.HostID), cmp.Compare(a.Name, b.Name))
		})
		v.FleetHosts = len(hosts)
	}
	return v
}

// uiFuncs are the templates' helpers.
var uiFuncs = template.FuncMap{
	// when renders t as a <time> the page's script shows in the viewer's
	// zone, UTC in its title; "—" when zero.
	"when": func(t time.Time) template.HTML {
		if t.IsZero() {
			return "—"
		}
		u := t.UTC()
		return template.HTML(`<time datetime="` + u.Format(time.RFC3339) + `" title="` + u.Format("2006-01-02 15:04:05") + ` UTC">` +
			u.Format("2006-01-02 15:04:05") + ` UTC</time>`)
	},
	"bytes": func(n uint64) string {
		const unit = 1024
		if n < unit {
			return strconv.FormatUint(n, 10) + " B"
		}
		div, exp := uint64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"pct": func(used, total uint64) string {
		if total == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f%%", float64(used)*100/float64(total))
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"join": strings.Join,
}
