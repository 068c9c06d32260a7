package dtma

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DesiredState is what the operator last asked an instance to be.
type DesiredState string

const (
	DesiredRunning DesiredState = "running"
	DesiredStopped DesiredState = "stopped"
)

// Status is DTMA's own view of an instance (the dtma_status column): what the
// agent is doing with it, or the settled outcome.
type Status string

const (
	StatusDeploying  Status = "deploying"  // intent recorded, container being created/started
	StatusStarting   Status = "starting"   // start in progress
	StatusStopping   Status = "stopping"   // stop in progress
	StatusRestarting Status = "restarting" // restart in progress
	StatusRemoving   Status = "removing"   // remove in progress
	StatusRunning    Status = "running"    // container running
	StatusStopped    Status = "stopped"    // container exists, not running
	StatusMissing    Status = "missing"    // no container, and none wanted running
	StatusCrashLoop  Status = "crashloop"  // restarting too often; see ExitCode
	StatusError      Status = "error"      // the last operation failed; see LastError
)

// IsTransient reports whether s names an operation in progress. A record
// left in a transient status by a crash is finished by the reconciler.
func (s Status) IsTransient() bool {
	switch s {
	case StatusDeploying, StatusStarting, StatusStopping, StatusRestarting, StatusRemoving:
		return true
	}
	return false
}

// DockerState is Docker's state word for a container, plus "missing" when
// there is no container at all.
type DockerState string

const (
	DockerCreated    DockerState = "created"
	DockerRunning    DockerState = "running"
	DockerPaused     DockerState = "paused"
	DockerRestarting DockerState = "restarting"
	DockerExited     DockerState = "exited"
	DockerDead       DockerState = "dead"
	DockerRemoving   DockerState = "removing"
	DockerMissing    DockerState = "missing"
	DockerUnknown    DockerState = "" // never observed
)

// Op is an operation in progress on an instance. It is written to the
// registry before the agent acts on Docker (the intent) and cleared once the
// outcome is recorded, so a crash leaves a trace the reconciler can finish.
type Op string

const (
	OpNone    Op = ""
	OpDeploy  Op = "deploy"
	OpStart   Op = "start"
	OpStop    Op = "stop"
	OpRestart Op = "restart"
	OpRemove  Op = "remove"
)

// Tracking says how the agent finds an instance's container.
type Tracking string

const (
	// TrackLabel: the container carries DTMA's labels (created by DTMA).
	TrackLabel Tracking = "label"
	// TrackContainerID: a legacy container without labels, brought under
	// management by migration; found by its container ID until the agent
	// next recreates it (which adds the labels).
	TrackContainerID Tracking = "container_id"
)

// Port is one published port. In a requested Spec HostPort 0 means
// "allocate one"; in Instance.Ports it is always the resolved port.
type Port struct {
	ContainerPort int    `json:"container_port"`
	Protocol      string `json:"protocol"` // tcp or udp (sctp is refused by Validate)
	HostPort      int    `json:"host_port"`
	HostIP        string `json:"host_ip,omitempty"` // "" = the agent's default
}

// Key returns "<container_port>/<protocol>", Docker's port key.
func (p Port) Key() string { return strconv.Itoa(p.ContainerPort) + "/" + p.Protocol }

// Spec is what a caller asked for: everything needed to (re)create the
// container exactly. Env values are secrets: they are stored in the registry
// (to recreate the container) but never returned, logged or put in labels.
type Spec struct {
	Image string            `json:"image"`
	Env   map[string]string `json:"env,omitempty"`
	Ports []Port            `json:"ports,omitempty"`
	// Limits is the caller's per-deploy override of the host's resource
	// limits (v1 only); unset fields take the host's defaults when the
	// container is created. Omitted from the canonical form when unset,
	// so a spec without it hashes exactly as before it existed.
	Limits Limits `json:"limits,omitzero"`
	// MCP is the declared MCP transport (v1 only, or the operator's
	// DTMA_STDIO_IMAGES for legacy deploys); omitted when unset like Limits.
	MCP MCP `json:"mcp,omitzero"`
	// Health is the instance's health check; omitted from the canonical
	// form and the hash when unset, like Limits.
	Health HealthCheck `json:"health,omitzero"`
}

// Hash returns a stable hex SHA-256 of the spec's public shape: the image,
// the env variable NAMES (never their values) and the ports, in a fixed
// order. It is stored in the dtma.spec-hash label and the spec_hash column.
// Env values are left out on purpose: anyone who can read a container's
// labels can already see the image, the env names (dtma.env-names) and the
// ports (dtma.ports), so the label tells them nothing new and cannot be used
// to check a guessed secret offline. Whether a re-deploy is identical is
// decided by Equal on the stored spec, values included.
func (s Spec) Hash() string {
	c := s.canonical()
	shape := struct {
		V      int         `json:"v"`
		Image  string      `json:"image"`
		Env    []string    `json:"env_names"`
		Ports  []Port      `json:"ports"`
		Limits Limits      `json:"limits,omitzero"` // left out when unset: older hashes stay valid
		MCP    MCP         `json:"mcp,omitzero"`    // likewise; never the token hash (labels are readable)
		Health HealthCheck `json:"health,omitzero"` // likewise
	}{V: 2, Image: c.Image, Env: c.EnvNames(), Ports: c.Ports, Limits: c.Limits, MCP: c.MCP.public(), Health: c.Health}
	b, _ := json.Marshal(shape)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// LegacyHash returns the hash DTMA stored before Hash left env values out:
// an unsalted SHA-256 of the whole canonical spec, values included. It is
// only used to recognise containers labelled by an older agent; nothing new
// is ever labelled with it.
func (s Spec) LegacyHash() string {
	b, _ := json.Marshal(s.canonical()) // maps marshal with sorted keys
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Equal reports whether s and o ask for the same container: same image,
// same env names and values, same ports in any order, same limits, same
// MCP transport and token. It is
// how a re-deploy is told identical (Hash leaves env values out).
func (s Spec) Equal(o Spec) bool {
	if s.Image != o.Image || len(s.Env) != len(o.Env) || s.Limits != o.Limits || s.MCP.identity() != o.MCP.identity() || s.Health != o.Health {
		return false
	}
	for k, v := range s.Env {
		if ov, ok := o.Env[k]; !ok || ov != v {
			return false
		}
	}
	a, b := s.canonical().Ports, o.canonical().Ports
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s Spec) canonical() Spec {
	c := Spec{Image: s.Image, Env: map[string]string{}, Ports: append([]Port(nil), s.Ports...), Limits: s.Limits, MCP: s.MCP, Health: s.Health}
	for k, v := range s.Env {
		c.Env[k] = v
	}
	SortPorts(c.Ports)
	return c
}

// SortPorts orders ports by container port, protocol, host IP and host port.
func SortPorts(ports []Port) {
	sort.Slice(ports, func(i, j int) bool {
		a, b := ports[i], ports[j]
		if a.ContainerPort != b.ContainerPort {
			return a.ContainerPort < b.ContainerPort
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if a.HostIP != b.HostIP {
			return a.HostIP < b.HostIP
		}
		return a.HostPort < b.HostPort
	})
}

// Diff lists, in words safe to show a caller, how o differs from s:
// "image (a vs b)", "env added: NEW", "env removed: OLD", "env values
// differ", "ports", "limits", "mcp", "mcp token differs", "health (a vs b)". Empty when equal. It never names a variable whose only
// change is its value, nor quotes a value: a conflicting re-deploy must not
// confirm a guessed secret variable by variable.
func (s Spec) Diff(o Spec) []string {
	var d []string
	if s.Image != o.Image {
		d = append(d, "image ("+s.Image+" vs "+o.Image+")")
	}
	var added, removed []string
	values := false
	for k, v := range s.Env {
		if ov, ok := o.Env[k]; !ok {
			removed = append(removed, k)
		} else if ov != v {
			values = true
		}
	}
	for k := range o.Env {
		if _, ok := s.Env[k]; !ok {
			added = append(added, k)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	if len(added) > 0 {
		d = append(d, "env added: "+strings.Join(added, " "))
	}
	if len(removed) > 0 {
		d = append(d, "env removed: "+strings.Join(removed, " "))
	}
	if values {
		d = append(d, "env values differ")
	}
	a, b := s.canonical().Ports, o.canonical().Ports
	same := len(a) == len(b)
	for i := 0; same && i < len(a); i++ {
		same = a[i] == b[i]
	}
	if !same {
		d = append(d, "ports")
	}
	if s.Limits != o.Limits {
		d = append(d, "limits")
	}
	if s.MCP.public() != o.MCP.public() {
		d = append(d, "mcp")
	} else if s.MCP.TokenHash != o.MCP.TokenHash {
		d = append(d, "mcp token differs")
	}
	if s.Health != o.Health {
		d = append(d, "health ("+s.Health.String()+" vs "+o.Health.String()+")")
	}
	return d
}

// EnvNames returns the sorted names of the spec's environment variables.
func (s Spec) EnvNames() []string {
	names := make([]string, 0, len(s.Env))
	for k := range s.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Observed is what the agent last saw of an instance's container in Docker.
// The reconciler writes it to the registry only when it changes.
type Observed struct {
	DockerStatus DockerState `json:"docker_status"`
	ContainerID  string      `json:"container_id,omitempty"`
	StartedAt    time.Time   `json:"started_at,omitzero"`
	FinishedAt   time.Time   `json:"finished_at,omitzero"`
	ExitCode     int         `json:"exit_code"`
	RestartCount int         `json:"restart_count"`
}

// Instance is one managed tool container: the registry row.
type Instance struct {
	ID                    string // UUID, assigned by the registry when empty
	HostID                string // the agent that owns the row
	Name                  string // the caller's key (instance_name_on_toolbox), unique per host
	AccountToolInstanceID string // optional UUID, unique per host when set
	ContainerName         string // derived Docker name, unique per host

	Spec     Spec   // requested spec
	SpecHash string // Spec.Hash(): image, env names and ports, no values
	Ports    []Port // resolved bindings (HostPort never 0)

	DesiredState DesiredState
	Status       Status // dtma_status
	PendingOp    Op     // operation in progress, OpNone when settled
	Tracking     Tracking
	LastError    string // caller-safe text of the last failure, "" when none

	Observed // what Docker last showed
	// ObservedAt is when Docker last confirmed Observed; zero when never. It
	// lives in the agent's memory only: persisting it would write on every
	// relist even when nothing changed.
	ObservedAt time.Time
	// Health is what the prober last concluded (Spec.Health); zero when the
	// instance has no check or is not running.
	Health HealthStatus

	CreatedAt time.Time
	UpdatedAt time.Time

	// Revision numbers this content of the row in the agent's memory: the
	// agent gives every change of a row a new, higher number, so two copies
	// of one instance with the same non-zero Revision are equal (readers may
	// cache what they derive from a row by it). 0 means unknown: a row read
	// from the registry or made by hand. Never persisted.
	Revision uint64
}

// Clone returns a deep copy of the instance.
func (i *Instance) Clone() *Instance {
	if i == nil {
		return nil
	}
	c := *i
	c.Spec = i.Spec.canonicalCopy()
	c.Ports = append([]Port(nil), i.Ports...)
	return &c
}

func (s Spec) canonicalCopy() Spec {
	c := Spec{Image: s.Image, Ports: append([]Port(nil), s.Ports...), Limits: s.Limits, MCP: s.MCP, Health: s.Health}
	if s.Env != nil {
		c.Env = make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			c.Env[k] = v
		}
	}
	return c
}

// Drift reports whether Docker disagrees with the desired state while no
// operation is in progress (for example a `docker stop` behind the agent).
func (i *Instance) Drift() bool {
	if i.PendingOp != OpNone || i.DockerStatus == DockerUnknown {
		return false
	}
	running := i.DockerStatus == DockerRunning || i.DockerStatus == DockerRestarting
	return (i.DesiredState == DesiredRunning) != running
}

// SettledStatus returns the dtma_status that matches Observed when no
// operation is in progress.
func (i *Instance) SettledStatus() Status {
	switch i.DockerStatus {
	case DockerRunning, DockerRestarting, DockerPaused:
		return StatusRunning
	case DockerCreated, DockerExited, DockerDead:
		return StatusStopped
	case DockerMissing:
		return StatusMissing
	}
	return i.Status
}

// DockerPortBindings returns ports in Docker's PortBindings shape,
// {"8080/tcp": [{"HostIp": "", "HostPort": "30001"}]}, as stored in the
// port_bindings column.
func DockerPortBindings(ports []Port) map[string][]DockerHostBinding {
	m := make(map[string][]DockerHostBinding, len(ports))
	for _, p := range ports {
		m[p.Key()] = append(m[p.Key()], DockerHostBinding{HostIP: p.HostIP, HostPort: strconv.Itoa(p.HostPort)})
	}
	return m
}

// DockerHostBinding is one element of Docker's PortBindings lists.
type DockerHostBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

// RegistryTime returns t as every Registry stores it: UTC, truncated to the
// microsecond; the zero time stays zero. Comparing times in this form tells
// a real change from a storage round trip.
func RegistryTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
