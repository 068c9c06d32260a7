package http

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/agentopia/dtma"
)

// instanceJSON is an instance as the v1 API shows it. Env is names only.
type instanceJSON struct {
	ID                    string      `json:"id"`
	HostID                string      `json:"host_id"`
	Name                  string      `json:"name"`
	AccountToolInstanceID *string     `json:"account_tool_instance_id"`
	ContainerName         string      `json:"container_name"`
	ContainerID           string      `json:"container_id"`
	Image                 string      `json:"image"`
	Env                   []string    `json:"env"`
	DesiredState          string      `json:"desired_state"`
	DTMAStatus            string      `json:"dtma_status"`
	DockerStatus          string      `json:"docker_status"`
	PendingOp             string      `json:"pending_operation,omitempty"`
	Drift                 bool        `json:"drift"`
	Tracking              string      `json:"tracking"`
	Ports                 []dtma.Port `json:"ports"`
	RequestedPorts        []dtma.Port `json:"requested_ports"`
	Limits                *limitsJSON `json:"limits"`
	StartedAt             *time.Time  `json:"started_at"`
	FinishedAt            *time.Time  `json:"finished_at"`
	ExitCode              int         `json:"exit_code"`
	RestartCount          int         `json:"restart_count"`
	ObservedAt            *time.Time  `json:"observed_at"`
	LastError             *string     `json:"last_error"`
	CreatedAt             time.Time   `json:"created_at"`
	UpdatedAt             time.Time   `json:"updated_at"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// dockerStatusWord is Docker's state word, "missing" when there is no
// container, "unknown" before the first observation.
func dockerStatusWord(inst *dtma.Instance) string {
	if inst.DockerStatus == dtma.DockerUnknown {
		return "unknown"
	}
	return string(inst.DockerStatus)
}

func toInstanceJSON(inst *dtma.Instance) instanceJSON {
	ports := inst.Ports
	if ports == nil {
		ports = []dtma.Port{}
	}
	req := inst.Spec.Ports
	if req == nil {
		req = []dtma.Port{}
	}
	return instanceJSON{
		ID:                    inst.ID,
		HostID:                inst.HostID,
		Name:                  inst.Name,
		AccountToolInstanceID: strPtr(inst.AccountToolInstanceID),
		ContainerName:         inst.ContainerName,
		ContainerID:           inst.ContainerID,
		Image:                 inst.Spec.Image,
		Env:                   inst.Spec.EnvNames(),
		DesiredState:          string(inst.DesiredState),
		DTMAStatus:            string(inst.Status),
		DockerStatus:          dockerStatusWord(inst),
		PendingOp:             string(inst.PendingOp),
		Drift:                 inst.Drift(),
		Tracking:              string(inst.Tracking),
		Ports:                 ports,
		RequestedPorts:        req,
		Limits:                toLimitsJSON(inst.Spec.Limits),
		StartedAt:             timePtr(inst.StartedAt),
		FinishedAt:            timePtr(inst.FinishedAt),
		ExitCode:              inst.ExitCode,
		RestartCount:          inst.RestartCount,
		ObservedAt:            timePtr(inst.ObservedAt),
		LastError:             strPtr(inst.LastError),
		CreatedAt:             inst.CreatedAt,
		UpdatedAt:             inst.UpdatedAt,
	}
}

func toInstanceList(list []*dtma.Instance) []instanceJSON {
	out := make([]instanceJSON, 0, len(list))
	for _, inst := range list {
		out = append(out, toInstanceJSON(inst))
	}
	return out
}

// deployRequestJSON is the body of POST /v1/instances.
type deployRequestJSON struct {
	Name                  string             `json:"name"`
	AccountToolInstanceID string             `json:"account_tool_instance_id"`
	Image                 string             `json:"image"`
	Env                   map[string]string  `json:"env"`
	Ports                 []dtma.Port        `json:"ports"`
	PullPolicy            string             `json:"pull_policy"`
	Limits                *limitsRequestJSON `json:"limits"`
}

// limitsRequestJSON is the optional per-deploy override of the host's
// resource limits: memory as "512m" or bytes, pids, cpus as 0.5 or "0.5".
type limitsRequestJSON struct {
	Memory json.RawMessage `json:"memory"`
	PIDs   *int64          `json:"pids"`
	CPUs   json.RawMessage `json:"cpus"`
}

// limitsJSON is the per-deploy override as an instance shows it (null
// when the instance takes the host's defaults).
type limitsJSON struct {
	Memory int64   `json:"memory,omitempty"` // bytes
	PIDs   int64   `json:"pids,omitempty"`
	CPUs   float64 `json:"cpus,omitempty"`
}

func toLimitsJSON(l dtma.Limits) *limitsJSON {
	if l.IsZero() {
		return nil
	}
	return &limitsJSON{Memory: l.Memory, PIDs: l.PIDs, CPUs: float64(l.MilliCPUs) / 1000}
}

// limits converts the request's override; a field given explicitly must
// be a valid, positive value (omit it for the host's default). EINVALID
// names limits.memory, limits.pids or limits.cpus.
func (b *deployRequestJSON) limits() (dtma.Limits, error) {
	var l dtma.Limits
	if b.Limits == nil {
		return l, nil
	}
	given := func(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
	if given(b.Limits.Memory) {
		n, err := dtma.MemoryJSON(b.Limits.Memory)
		if err != nil {
			return l, dtma.FieldErrorf(dtma.EINVALID, "limits.memory", "%v", err)
		}
		if n == 0 {
			return l, dtma.FieldErrorf(dtma.EINVALID, "limits.memory", "must be at least %s (omit it for the host's default)", dtma.FormatMemory(dtma.MinMemory))
		}
		l.Memory = n
	}
	if b.Limits.PIDs != nil {
		if *b.Limits.PIDs <= 0 {
			return l, dtma.FieldErrorf(dtma.EINVALID, "limits.pids", "must be at least %d (omit it for the host's default)", dtma.MinPIDs)
		}
		l.PIDs = *b.Limits.PIDs
	}
	if given(b.Limits.CPUs) {
		n, err := dtma.CPUsJSON(b.Limits.CPUs)
		if err != nil {
			return l, dtma.FieldErrorf(dtma.EINVALID, "limits.cpus", "%v", err)
		}
		if n == 0 {
			return l, dtma.FieldErrorf(dtma.EINVALID, "limits.cpus", "must be at least %s (omit it for the host's default)", dtma.FormatCPUs(dtma.MinMilliCPUs))
		}
		l.MilliCPUs = n
	}
	return l, nil
}

func (s *Server) handleV1Deploy(w http.ResponseWriter, r *http.Request) {
	var body deployRequestJSON
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	limits, err := body.limits()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	inst, created, err := s.Service.Deploy(r.Context(), dtma.DeployRequest{
		Name:                  body.Name,
		AccountToolInstanceID: body.AccountToolInstanceID,
		Spec:                  dtma.Spec{Image: body.Image, Env: body.Env, Ports: body.Ports, Limits: limits},
		PullPolicy:            dtma.PullPolicy(body.PullPolicy),
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, toInstanceJSON(inst))
}

func (s *Server) handleV1List(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListInstances(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"instances": toInstanceList(list)})
}

func (s *Server) handleV1Fleet(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListFleet(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"instances": toInstanceList(list)})
}

func (s *Server) handleV1Get(w http.ResponseWriter, r *http.Request) {
	inst, err := s.Service.FindInstance(r.Context(), r.PathValue("ref"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toInstanceJSON(inst))
}

// doAction runs start, stop or restart and says whether it changed
// anything.
func (s *Server) doAction(r *http.Request, action string) (*dtma.Instance, bool, error) {
	ref := r.PathValue("ref")
	switch action {
	case "start":
		return s.Service.StartInstance(r.Context(), ref)
	case "stop":
		var timeout time.Duration
		if v := r.URL.Query().Get("timeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 3600 {
				return nil, false, dtma.FieldErrorf(dtma.EINVALID, "timeout", "must be whole seconds from 0 to 3600")
			}
			timeout = time.Duration(n) * time.Second
		}
		return s.Service.StopInstance(r.Context(), ref, timeout)
	default:
		inst, err := s.Service.RestartInstance(r.Context(), ref)
		return inst, true, err
	}
}

func actionMessage(action string, inst *dtma.Instance, changed bool) string {
	switch {
	case action == "start" && !changed:
		return "instance " + inst.Name + " is already running"
	case action == "start":
		return "instance " + inst.Name + " started"
	case action == "stop" && !changed:
		return "instance " + inst.Name + " is already stopped"
	case action == "stop":
		return "instance " + inst.Name + " stopped"
	}
	return "instance " + inst.Name + " restarted"
}

func (s *Server) handleV1Action(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inst, changed, err := s.doAction(r, action)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"changed":  changed,
			"message":  actionMessage(action, inst, changed),
			"instance": toInstanceJSON(inst),
		})
	}
}

func (s *Server) handleV1Remove(w http.ResponseWriter, r *http.Request) {
	if err := s.Service.RemoveInstance(r.Context(), r.PathValue("ref")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseLogOptions reads tail (default 100 for the legacy face, all for v1
// when absent) and follow.
func parseLogOptions(r *http.Request, defaultTail int) (dtma.LogOptions, error) {
	opts := dtma.LogOptions{Tail: defaultTail}
	q := r.URL.Query()
	if v := q.Get("tail"); v != "" && v != "all" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100000 {
			return opts, dtma.FieldErrorf(dtma.EINVALID, "tail", "must be a whole number from 0 to 100000, or all")
		}
		opts.Tail = n
	} else if v == "all" {
		opts.Tail = 0
	}
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return opts, dtma.FieldErrorf(dtma.EINVALID, "follow", "must be true or false")
		}
		opts.Follow = b
	}
	return opts, nil
}

func (s *Server) handleV1Logs(w http.ResponseWriter, r *http.Request) {
	opts, err := parseLogOptions(r, 0)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc, err := s.Service.InstanceLogs(r.Context(), r.PathValue("ref"), opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if !opts.Follow {
		_, _ = io.Copy(w, rc)
		return
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	br := bufio.NewReader(rc)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

type adoptRequestJSON struct {
	Name                  string `json:"name"`
	AccountToolInstanceID string `json:"account_tool_instance_id"`
	Image                 string `json:"image"`
	Container             string `json:"container"`
	DryRun                bool   `json:"dry_run"`
}

func (s *Server) handleV1Adopt(w http.ResponseWriter, r *http.Request) {
	var body adoptRequestJSON
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.Service.AdoptContainer(r.Context(), dtma.AdoptRequest{
		Name:                  body.Name,
		AccountToolInstanceID: body.AccountToolInstanceID,
		Image:                 body.Image,
		Container:             body.Container,
		DryRun:                body.DryRun,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := map[string]any{"action": res.Action, "dry_run": body.DryRun}
	if res.Reason != "" {
		out["reason"] = res.Reason
	}
	if res.Instance != nil {
		out["instance"] = toInstanceJSON(res.Instance)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV1Health(w http.ResponseWriter, r *http.Request) {
	h := s.Service.Health(r.Context())
	status := http.StatusOK
	if !h.DockerOK || !h.RegistryOK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{
		"version":          h.Version,
		"host_id":          h.HostID,
		"docker_ok":        h.DockerOK,
		"docker_error":     strPtr(h.DockerError),
		"registry_ok":      h.RegistryOK,
		"registry_error":   strPtr(h.RegistryError),
		"last_observed_at": timePtr(h.LastObservedAt),
	})
}
