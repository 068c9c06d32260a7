package http

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// The legacy face: the routes and envelopes the platform's backend already
// uses (see shared/reference/legacy-dtma-api.md). Field names are the
// backend's and part of the contract.

type legacyBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

type legacyDeployJSON struct {
	DockerImageURL        string `json:"dockerImageUrl"`
	InstanceNameOnToolbox string `json:"instanceNameOnToolbox"`
	AccountToolInstanceID string `json:"accountToolInstanceId"`
	PullPolicy            string `json:"pullPolicy"`
	// BaseConfigOverrideJSON is passed through by the backend from its
	// database unchanged: absent, null, or an object that may hold keys of
	// the backend UI's own besides the Docker-shaped Env and HostConfig.
	BaseConfigOverrideJSON json.RawMessage `json:"baseConfigOverrideJson"`
}

// legacyOverride is the part of baseConfigOverrideJson DTMA uses. Every
// other key (of the override or of its HostConfig: Privileged, Binds,
// NetworkMode, the UI's own, ...) is ignored.
type legacyOverride struct {
	Env        []string `json:"Env"`
	HostConfig *struct {
		PortBindings map[string][]legacyBinding `json:"PortBindings"`
	} `json:"HostConfig"`
}

// legacyUsedKeys are the keys of baseConfigOverrideJson (and of its
// HostConfig) that DTMA reads.
var legacyUsedKeys = map[string]bool{"Env": true, "HostConfig": true, "HostConfig.PortBindings": true}

type legacyPort struct {
	IP          string `json:"ip"`
	PrivatePort int    `json:"private_port"`
	PublicPort  int    `json:"public_port"`
	Type        string `json:"type"`
}

// legacyTool is one element of tool_instances. The first fields are the
// legacy contract's; the rest are DTMA additions old clients ignore.
type legacyTool struct {
	AccountToolInstanceID string       `json:"account_tool_instance_id"`
	InstanceNameOnToolbox string       `json:"instance_name_on_toolbox"`
	ContainerID           string       `json:"container_id"`
	Status                string       `json:"status"` // dtma.BackendStatus: a word the backend maps right
	State                 string       `json:"state"`  // Docker's word (created, running, exited, ..., missing)
	Image                 string       `json:"image"`
	Ports                 []legacyPort `json:"ports"`
	Created               int64        `json:"created"`
	DTMAStatus            string       `json:"dtma_status"`
	DesiredState          string       `json:"desired_state"`
	Drift                 bool         `json:"drift"`
	ExitCode              int          `json:"exit_code"`
	RestartCount          int          `json:"restart_count"`
	LastError             *string      `json:"last_error"`
	// Health is the health check's state (starting, healthy, unhealthy;
	// unknown when not probed), null without a check; HealthError its
	// last failure.
	Health      *string `json:"health"`
	HealthError *string `json:"health_error"`
}

func toLegacyTool(inst *dtma.Instance) legacyTool {
	ports := make([]legacyPort, 0, len(inst.Ports)+1)
	for _, p := range inst.PublishedPorts() { // a stdio bridge's port too
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		ports = append(ports, legacyPort{IP: ip, PrivatePort: p.ContainerPort, PublicPort: p.HostPort, Type: p.Protocol})
	}
	return legacyTool{
		AccountToolInstanceID: inst.AccountToolInstanceID,
		InstanceNameOnToolbox: inst.Name,
		ContainerID:           inst.ContainerID,
		Status:                dtma.BackendStatus(inst),
		State:                 dockerStatusWord(inst),
		Image:                 inst.Spec.Image,
		Ports:                 ports,
		Created:               unixSeconds(inst.CreatedAt),
		DTMAStatus:            string(inst.Status),
		DesiredState:          string(inst.DesiredState),
		Drift:                 inst.Drift(),
		ExitCode:              inst.ExitCode,
		RestartCount:          inst.RestartCount,
		LastError:             strPtr(inst.LastError),
		Health:                legacyHealth(inst),
		HealthError:           strPtr(inst.Health.LastError),
	}
}

// unixSeconds is t in unix seconds, 0 for the zero time: the backend turns
// every entry's created into a Date, and one odd value empties its list.
func unixSeconds(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func toLegacyTools(list []*dtma.Instance) []legacyTool {
	out := make([]legacyTool, 0, len(list))
	for _, inst := range list {
		out = append(out, toLegacyTool(inst))
	}
	return out
}

// legacyField renames a v1 field in an error to the legacy body's name.
func legacyField(err error, portKeys []string) error {
	var e *dtma.Error
	if !errors.As(err, &e) || e.Field == "" {
		return err
	}
	c := *e
	switch {
	case c.Field == "name":
		c.Field = "instanceNameOnToolbox"
	case c.Field == "image":
		c.Field = "dockerImageUrl"
	case c.Field == "account_tool_instance_id":
		c.Field = "accountToolInstanceId"
	case c.Field == "pull_policy":
		c.Field = "pullPolicy"
	case c.Field == "env" || strings.HasPrefix(c.Field, "env."):
		c.Field = "baseConfigOverrideJson.Env" + strings.TrimPrefix(c.Field, "env")
	case c.Field == "ports" || strings.HasPrefix(c.Field, "ports["):
		var i int
		if _, err := fmt.Sscanf(c.Field, "ports[%d]", &i); err == nil && i >= 0 && i < len(portKeys) {
			c.Field = "baseConfigOverrideJson.HostConfig.PortBindings[\"" + portKeys[i] + "\"]"
		} else {
			c.Field = "baseConfigOverrideJson.HostConfig.PortBindings"
		}
	}
	return &c
}

// parseLegacyDeploy turns the legacy body into a DeployRequest and the
// PortBindings key of each port (for error messages). ignored lists the keys
// of baseConfigOverrideJson (and its HostConfig) that DTMA does not use.
func parseLegacyDeploy(body legacyDeployJSON) (req dtma.DeployRequest, keys, ignored []string, err error) {
	req = dtma.DeployRequest{
		Name:                  body.InstanceNameOnToolbox,
		AccountToolInstanceID: body.AccountToolInstanceID,
		Spec:                  dtma.Spec{Image: body.DockerImageURL},
		PullPolicy:            dtma.PullPolicy(body.PullPolicy),
	}
	cfg, ignored, err := parseLegacyOverride(body.BaseConfigOverrideJSON)
	if err != nil || cfg == nil {
		return req, nil, ignored, err
	}
	for i, kv := range cfg.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return req, nil, ignored, dtma.FieldErrorf(dtma.EINVALID, fmt.Sprintf("baseConfigOverrideJson.Env[%d]", i), "must be NAME=value")
		}
		if req.Spec.Env == nil {
			req.Spec.Env = map[string]string{}
		}
		req.Spec.Env[k] = v
	}
	if cfg.HostConfig != nil {
		pbKeys := make([]string, 0, len(cfg.HostConfig.PortBindings))
		for k := range cfg.HostConfig.PortBindings {
			pbKeys = append(pbKeys, k)
		}
		sort.Strings(pbKeys)
		for _, key := range pbKeys {
			field := "baseConfigOverrideJson.HostConfig.PortBindings[\"" + key + "\"]"
			portStr, proto, _ := strings.Cut(key, "/")
			cport, err := strconv.Atoi(portStr)
			if err != nil {
				return req, nil, ignored, dtma.FieldErrorf(dtma.EINVALID, field, "key must be \"<port>/<protocol>\"")
			}
			bindings := cfg.HostConfig.PortBindings[key]
			if len(bindings) == 0 {
				bindings = []legacyBinding{{}}
			}
			for _, b := range bindings {
				hp := 0
				if s := strings.TrimSpace(b.HostPort); s != "" {
					if hp, err = strconv.Atoi(s); err != nil {
						return req, nil, ignored, dtma.FieldErrorf(dtma.EINVALID, field+".HostPort", "must be a port number")
					}
				}
				req.Spec.Ports = append(req.Spec.Ports, dtma.Port{ContainerPort: cport, Protocol: proto, HostPort: hp, HostIP: b.HostIP})
				keys = append(keys, key)
			}
		}
	}
	return req, keys, ignored, nil
}

// parseLegacyOverride decodes baseConfigOverrideJson: absent or null is nil;
// an object yields the parts DTMA uses and the names of the keys it ignores
// (sorted); anything else is EINVALID naming the field.
func parseLegacyOverride(raw json.RawMessage) (*legacyOverride, []string, error) {
	const field = "baseConfigOverrideJson"
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, dtma.FieldErrorf(dtma.EINVALID, field, "must be an object or null")
	}
	var ignored []string
	for k, v := range top {
		if !legacyUsedKeys[k] {
			ignored = append(ignored, k)
			continue
		}
		if k == "HostConfig" {
			var hc map[string]json.RawMessage
			if json.Unmarshal(v, &hc) == nil {
				for hk := range hc {
					if !legacyUsedKeys["HostConfig."+hk] {
						ignored = append(ignored, "HostConfig."+hk)
					}
				}
			}
		}
	}
	sort.Strings(ignored)
	var cfg legacyOverride
	if err := json.Unmarshal(raw, &cfg); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return nil, ignored, dtma.FieldErrorf(dtma.EINVALID, field+"."+typ.Field, "must be %s", jsonTypeName(typ.Type.Kind().String()))
		}
		return nil, ignored, dtma.FieldErrorf(dtma.EINVALID, field, "cannot be decoded")
	}
	return &cfg, ignored, nil
}

func (s *Server) handleLegacyDeploy(w http.ResponseWriter, r *http.Request) {
	var body legacyDeployJSON
	if err := decodeJSON(w, r, &body, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	req, keys, ignored, err := parseLegacyDeploy(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(ignored) > 0 {
		s.Logger.Debug("legacy deploy: baseConfigOverrideJson keys ignored", "instance", truncate(req.Name), "keys", truncateList(ignored))
	}
	req.OnPortConflict = s.LegacyPortConflict
	if req.OnPortConflict == "" {
		req.OnPortConflict = dtma.PortConflictRemap
	}
	inst, created, err := s.Service.Deploy(r.Context(), req)
	if err != nil {
		s.writeError(w, r, legacyField(err, keys))
		return
	}
	status, msg := http.StatusCreated, "tool "+inst.Name+" deployed"
	if !created {
		status, msg = http.StatusOK, "tool "+inst.Name+" is already deployed with this spec; ensured it runs"
	}
	t := toLegacyTool(inst)
	writeJSON(w, status, map[string]any{"success": true, "message": msg, "data": map[string]any{
		"container_id":             inst.ContainerID,
		"instance_name_on_toolbox": inst.Name,
		"account_tool_instance_id": inst.AccountToolInstanceID,
		"container_name":           inst.ContainerName,
		"image":                    inst.Spec.Image,
		"ports":                    t.Ports,
		"state":                    t.State,
		"status":                   t.Status,
		"dtma_status":              t.DTMAStatus,
	}})
}

func (s *Server) handleLegacyAction(action dtma.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inst, changed, err := s.doAction(r, action)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"success": true,
			"message": actionMessage(action, inst, changed),
			"data": map[string]any{"state": dockerStatusWord(inst), "status": dtma.BackendStatus(inst), "dtma_status": inst.Status,
				"changed": changed, "container_id": inst.ContainerID},
		})
	}
}

func (s *Server) handleLegacyRemove(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	if err := s.Service.RemoveInstance(r.Context(), ref); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "tool " + ref + " removed"})
}

func (s *Server) handleLegacyToolStatus(w http.ResponseWriter, r *http.Request) {
	inst, err := s.Service.FindInstance(r.Context(), r.PathValue("ref"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t := toLegacyTool(inst)
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "status": t.Status, "data": t})
}

// maxLegacyLogLines bounds the lines the legacy logs route returns in one
// JSON body.
const maxLegacyLogLines = 10000

func (s *Server) handleLegacyLogs(w http.ResponseWriter, r *http.Request) {
	opts, err := parseLogOptions(r, 100)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	opts.Follow = false // a JSON body cannot stream
	if opts.Tail == 0 || opts.Tail > maxLegacyLogLines {
		opts.Tail = maxLegacyLogLines
	}
	rc, err := s.Service.InstanceLogs(r.Context(), r.PathValue("ref"), opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	lines := []string{}
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "logs": lines})
}

func (s *Server) handleLegacyToolsStatus(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListInstances(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": s.Version, "tool_instances": toLegacyTools(list)})
}

func (s *Server) handleLegacyStatus(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListInstances(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var m dtma.SystemMetrics
	if s.Metrics != nil {
		if got, err := s.Metrics.SystemMetrics(r.Context()); err == nil {
			m = got
		} else {
			s.Logger.Warn("system metrics", "err", err)
		}
	}
	h := s.Service.Health(r.Context())
	status := "healthy"
	if !h.DockerOK || !h.RegistryOK {
		status = "degraded"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status":         status,
		"timestamp":      time.Now().UTC().Format(time.RFC3339Nano),
		"version":        s.Version,
		"service":        "DTMA",
		"host_id":        h.HostID,
		"docker_ok":      h.DockerOK,
		"registry_ok":    h.RegistryOK,
		"tool_instances": toLegacyTools(list),
		"system_metrics": m,
		"environment":    s.Environment,
	})
}

// truncateList bounds a client-supplied list of names before it is
// logged: at most 32 entries, each truncated.
func truncateList(list []string) []string {
	const max = 32
	out := make([]string, 0, min(len(list), max))
	for i, v := range list {
		if i == max {
			out = append(out, fmt.Sprintf("…(%d more)", len(list)-max))
			break
		}
		out = append(out, truncate(v))
	}
	return out
}

// legacyHealth is the health word of a tool with a check, nil without.
func legacyHealth(inst *dtma.Instance) *string {
	if c, _ := inst.EffectiveCheck(); !c.Enabled() {
		return nil
	}
	w := string(inst.Health.State)
	if w == "" {
		w = "unknown"
	}
	return &w
}
