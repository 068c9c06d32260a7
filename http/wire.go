package http

import (
	"encoding/json"
	"time"

	"github.com/agentopia/dtma"
)

// The v1 API's wire types: the Server writes them and the Client reads them,
// so the CLI and the end-to-end tests see exactly what the agent serves.
// Field names are the v1 contract (http/openapi.json).

// Instance is an instance as the v1 API shows it. Env holds names only:
// values are never returned.
type Instance struct {
	ID                    string          `json:"id"`
	HostID                string          `json:"host_id"`
	Name                  string          `json:"name"`
	AccountToolInstanceID *string         `json:"account_tool_instance_id"`
	ContainerName         string          `json:"container_name"`
	ContainerID           string          `json:"container_id"`
	Image                 string          `json:"image"`
	Env                   []string        `json:"env"`
	DesiredState          string          `json:"desired_state"`
	DTMAStatus            string          `json:"dtma_status"`
	DockerStatus          string          `json:"docker_status"`
	PendingOp             string          `json:"pending_operation,omitempty"`
	Drift                 bool            `json:"drift"`
	Tracking              string          `json:"tracking"`
	Ports                 []dtma.Port     `json:"ports"`
	RequestedPorts        []dtma.Port     `json:"requested_ports"`
	Limits                *Limits         `json:"limits"`
	MCP                   *MCP            `json:"mcp"`
	Health                *InstanceHealth `json:"health"`
	StartedAt             *time.Time      `json:"started_at"`
	FinishedAt            *time.Time      `json:"finished_at"`
	ExitCode              int             `json:"exit_code"`
	RestartCount          int             `json:"restart_count"`
	ObservedAt            *time.Time      `json:"observed_at"`
	LastError             *string         `json:"last_error"`
	CreatedAt             time.Time       `json:"created_at"`
	UpdatedAt             time.Time       `json:"updated_at"`
}

// AccountID is the account tool instance id, "" when there is none.
func (i Instance) AccountID() string {
	if i.AccountToolInstanceID == nil {
		return ""
	}
	return *i.AccountToolInstanceID
}

// Transient reports whether an operation is in progress on the instance.
func (i Instance) Transient() bool {
	return i.PendingOp != "" || dtma.Status(i.DTMAStatus).IsTransient()
}

// NewInstance returns inst in its v1 shape.
func NewInstance(inst *dtma.Instance) Instance {
	ports := inst.Ports
	if ports == nil {
		ports = []dtma.Port{}
	}
	req := inst.Spec.Ports
	if req == nil {
		req = []dtma.Port{}
	}
	return Instance{
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
		Limits:                toLimits(inst.Spec.Limits),
		MCP:                   toMCP(inst.Spec.MCP),
		Health:                toHealth(inst),
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

func newInstanceList(list []*dtma.Instance) InstanceList {
	out := make([]Instance, 0, len(list))
	for _, inst := range list {
		out = append(out, NewInstance(inst))
	}
	return InstanceList{Instances: out}
}

// InstanceList is the body of GET /v1/instances and GET /v1/fleet/instances.
type InstanceList struct {
	Instances []Instance `json:"instances"`
	// NextCursor, on a page of the fleet list, is the cursor of the next
	// page; absent on the last.
	NextCursor string `json:"next_cursor,omitempty"`
}

// DeployRequest is the body of POST /v1/instances.
type DeployRequest struct {
	Name                  string              `json:"name"`
	AccountToolInstanceID string              `json:"account_tool_instance_id,omitempty"`
	Image                 string              `json:"image"`
	Env                   map[string]string   `json:"env,omitempty"`
	Ports                 []dtma.Port         `json:"ports,omitempty"`
	PullPolicy            string              `json:"pull_policy,omitempty"`
	Limits                *LimitsRequest      `json:"limits,omitempty"`
	MCP                   *MCPRequest         `json:"mcp,omitempty"`
	Health                *HealthCheckRequest `json:"health,omitempty"`
	// RegistryAuth is the credential for pulling Image from a private
	// registry: used for this request's pull only, never stored, logged
	// or returned (not part of the spec).
	RegistryAuth *RegistryAuth `json:"registry_auth,omitempty"`
}

// RegistryAuth is a deploy's registry credential: username and password
// (or access token), or an identity token.
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identity_token,omitempty"`
}

// DeployEvent is one line of POST /v1/instances answered as
// application/x-ndjson: progress lines (Progress set) while the image is
// pulled, then one last line with the outcome — Instance and Created, or
// Error — and Status, the HTTP status the plain answer would have had.
type DeployEvent struct {
	Progress *dtma.PullProgress `json:"progress,omitempty"`
	Status   int                `json:"status,omitempty"`
	Created  bool               `json:"created,omitempty"`
	Instance *Instance          `json:"instance,omitempty"`
	Error    *ErrorDetail       `json:"error,omitempty"`
}

// ActionResult is the answer of POST /v1/instances/{ref}/start|stop|restart.
type ActionResult struct {
	Changed  bool     `json:"changed"`
	Message  string   `json:"message"`
	Instance Instance `json:"instance"`
}

// AdoptRequest is the body of POST /v1/adopt.
type AdoptRequest struct {
	Name                  string `json:"name"`
	AccountToolInstanceID string `json:"account_tool_instance_id,omitempty"`
	Image                 string `json:"image,omitempty"`
	Container             string `json:"container,omitempty"`
	DryRun                bool   `json:"dry_run"`
}

// AdoptResult is the answer of POST /v1/adopt.
type AdoptResult struct {
	Action   string    `json:"action"` // adopt, unchanged or skip
	DryRun   bool      `json:"dry_run"`
	Reason   string    `json:"reason,omitempty"`
	Instance *Instance `json:"instance,omitempty"`
}

// Health is the body of GET /v1/health (200 when Docker and the registry
// answer, 503 otherwise).
type Health struct {
	Version        string     `json:"version"`
	HostID         string     `json:"host_id"`
	DockerOK       bool       `json:"docker_ok"`
	DockerError    *string    `json:"docker_error"`
	RegistryOK     bool       `json:"registry_ok"`
	RegistryError  *string    `json:"registry_error"`
	LastObservedAt *time.Time `json:"last_observed_at"`
}

// ErrorBody is the body of every v1 error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a v1 error: a dtma error code, a message for people, and
// the offending request field when there is one.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// LimitsRequest is the optional per-deploy override of the host's
// resource limits: memory as "512m" or bytes, pids, cpus as 0.5 or "0.5".
type LimitsRequest struct {
	Memory json.RawMessage `json:"memory"`
	PIDs   *int64          `json:"pids"`
	CPUs   json.RawMessage `json:"cpus"`
}

// Limits is the per-deploy override as an instance shows it (null
// when the instance takes the host's defaults).
type Limits struct {
	Memory int64   `json:"memory,omitempty"` // bytes
	PIDs   int64   `json:"pids,omitempty"`
	CPUs   float64 `json:"cpus,omitempty"`
}

func toLimits(l dtma.Limits) *Limits {
	if l.IsZero() {
		return nil
	}
	return &Limits{Memory: l.Memory, PIDs: l.PIDs, CPUs: float64(l.MilliCPUs) / 1000}
}

// limits converts the request's override; a field given explicitly must
// be a valid, positive value (omit it for the host's default). EINVALID
// names limits.memory, limits.pids or limits.cpus.
func (b *DeployRequest) limits() (dtma.Limits, error) {
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

// MCPRequest is a deploy's `mcp` object: the server's MCP transport. Token
// (stdio only, at least dtma.MinMCPTokenLen bytes) is write-only: only its
// SHA-256 is stored, and a bridge client must then send it as a bearer token.
type MCPRequest struct {
	Transport string `json:"transport"`
	Path      string `json:"path,omitempty"`
	Port      int    `json:"port,omitempty"`
	Token     string `json:"token,omitempty"`
}

// spec returns the request as a dtma.MCP, the token hashed. A token too
// short is EINVALID on mcp.token (never quoted).
func (m *MCPRequest) spec() (dtma.MCP, error) {
	if m == nil {
		return dtma.MCP{}, nil
	}
	out := dtma.MCP{Transport: dtma.MCPTransport(m.Transport), Path: m.Path, Port: m.Port}
	if m.Token != "" {
		if len(m.Token) < dtma.MinMCPTokenLen {
			return dtma.MCP{}, dtma.FieldErrorf(dtma.EINVALID, "mcp.token", "must be at least %d bytes", dtma.MinMCPTokenLen)
		}
		out.TokenHash = dtma.HashMCPToken(m.Token)
	}
	return out, nil
}

// MCP is an instance's MCP transport as v1 shows it (null when none was
// declared). TokenSet says whether its bridge requires a token; the token
// and its hash are never shown.
type MCP struct {
	Transport string `json:"transport"`
	Path      string `json:"path,omitempty"`
	Port      int    `json:"port,omitempty"`
	TokenSet  bool   `json:"token_set"`
	// BridgePort is the host port a stdio instance's bridge serves MCP
	// Streamable HTTP on, at Path (/mcp), on the agent's default host IP.
	BridgePort int `json:"bridge_port,omitempty"`
}

func toMCP(m dtma.MCP) *MCP {
	if m == (dtma.MCP{}) {
		return nil
	}
	out := &MCP{Transport: string(m.Transport), Path: m.Path, Port: m.Port, TokenSet: m.TokenHash != "", BridgePort: m.BridgePort}
	if m.IsStdio() {
		out.Path = dtma.MCPBridgePath
	}
	return out
}
