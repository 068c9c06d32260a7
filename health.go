package dtma

import (
	"fmt"
	"strings"
	"time"
)

// CheckType is how a health check asks a tool whether it serves.
type CheckType string

const (
	CheckNone CheckType = "none" // no check: health is not known
	CheckTCP  CheckType = "tcp"  // a TCP connect to the published port succeeds
	CheckHTTP CheckType = "http" // an HTTP GET of Path answers ExpectStatus
	CheckMCP  CheckType = "mcp"  // an MCP client initializes and pings at Path
)

// MCP transports a CheckMCP speaks.
const (
	CheckMCPStreamable = "streamable" // Streamable HTTP (2025-03-26 and later); the default
	CheckMCPSSE        = "sse"        // the older HTTP+SSE transport (2024-11-05)
)

// OnUnhealthyRestart is the HealthCheck.OnUnhealthy policy that restarts
// the container once it is unhealthy.
const OnUnhealthyRestart = "restart"

// Defaults and bounds of a health check (Validate, WithDefaults).
const (
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 3 * time.Second
	DefaultCheckRetries  = 3
	DefaultMCPPath       = "/mcp"
	MinCheckInterval     = time.Second
	MaxCheckInterval     = time.Hour
	MinCheckTimeout      = 100 * time.Millisecond
	MaxCheckRetries      = 100
	MaxCheckStartPeriod  = time.Hour
	MaxCheckPathLen      = 1024
)

// HealthCheck is an instance's health check, part of its Spec. The zero
// value is "not set": it is left out of the spec's canonical form and hash,
// so specs written before checks existed hash as before. Durations are
// nanoseconds in the stored JSON; the v1 API speaks seconds. The struct is
// comparable, so Spec.Equal compares it with ==.
type HealthCheck struct {
	Type CheckType `json:"type,omitempty"`
	// Port is the container port whose published host port is dialed; 0
	// means the first published tcp port.
	Port int `json:"port,omitempty"`
	// Path is the HTTP path (http) or MCP endpoint (mcp; default /mcp, or
	// /sse for the sse transport).
	Path string `json:"path,omitempty"`
	// ExpectStatus is the HTTP status an http check wants; 0 accepts any
	// 2xx or 3xx.
	ExpectStatus int `json:"expect_status,omitempty"`
	// Transport is the MCP transport: streamable (default) or sse.
	Transport   string        `json:"transport,omitempty"`
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	Retries     int           `json:"retries,omitempty"`      // failures in a row that make it unhealthy
	StartPeriod time.Duration `json:"start_period,omitempty"` // failures within it after a start do not count
	// OnUnhealthy is "" (report only) or "restart".
	OnUnhealthy string `json:"on_unhealthy,omitempty"`
}

// IsZero reports whether no check is set.
func (h HealthCheck) IsZero() bool { return h == HealthCheck{} }

// Enabled reports whether the check probes anything.
func (h HealthCheck) Enabled() bool { return h.Type != "" && h.Type != CheckNone }

// WithDefaults returns h with unset fields at their defaults: interval 10 s,
// timeout 3 s (never above the interval), 3 retries, mcp transport
// streamable at /mcp (/sse for sse), http path /.
func (h HealthCheck) WithDefaults() HealthCheck {
	if h.Interval == 0 {
		h.Interval = DefaultCheckInterval
	}
	if h.Timeout == 0 {
		h.Timeout = min(DefaultCheckTimeout, h.Interval)
	}
	if h.Retries == 0 {
		h.Retries = DefaultCheckRetries
	}
	switch h.Type {
	case CheckMCP:
		if h.Transport == "" {
			h.Transport = CheckMCPStreamable
		}
		if h.Path == "" {
			h.Path = DefaultMCPPath
			if h.Transport == CheckMCPSSE {
				h.Path = "/sse"
			}
		}
	case CheckHTTP:
		if h.Path == "" {
			h.Path = "/"
		}
	}
	return h
}

// String renders h for logs and diffs: "mcp streamable /mcp every 10s".
func (h HealthCheck) String() string {
	if !h.Enabled() {
		return "none"
	}
	d := h.WithDefaults()
	s := string(d.Type)
	if d.Type == CheckMCP {
		s += " " + d.Transport
	}
	if d.Path != "" {
		s += " " + d.Path
	}
	return s + " every " + d.Interval.String()
}

// ValidateHealthCheck checks a check; errors are EINVALID naming the field
// (health.type, health.port, health.path, health.expect_status,
// health.transport, health.interval, health.timeout, health.retries,
// health.start_period, health.on_unhealthy). ports are the spec's ports: a
// check needs a published tcp port to dial.
func ValidateHealthCheck(h HealthCheck, ports []Port) error {
	if h.IsZero() {
		return nil
	}
	switch h.Type {
	case CheckNone:
		if h != (HealthCheck{Type: CheckNone}) {
			return FieldErrorf(EINVALID, "health.type", "none takes no other fields")
		}
		return nil
	case CheckTCP, CheckHTTP, CheckMCP:
	case "":
		return FieldErrorf(EINVALID, "health.type", "is required: none, tcp, http or mcp")
	default:
		return FieldErrorf(EINVALID, "health.type", "must be none, tcp, http or mcp")
	}
	if h.Port < 0 || h.Port > 65535 {
		return FieldErrorf(EINVALID, "health.port", "must be a container port between 1 and 65535")
	}
	if _, ok := CheckPort(h, ports); !ok {
		if h.Port != 0 {
			return FieldErrorf(EINVALID, "health.port", "container port %d/tcp is not published", h.Port)
		}
		return FieldErrorf(EINVALID, "health.port", "a check needs a published tcp port")
	}
	if h.Path != "" {
		if h.Type == CheckTCP {
			return FieldErrorf(EINVALID, "health.path", "a tcp check has no path")
		}
		if !strings.HasPrefix(h.Path, "/") || len(h.Path) > MaxCheckPathLen || strings.ContainsAny(h.Path, " \t\r\n#\x00") {
			return FieldErrorf(EINVALID, "health.path", "must be an absolute URL path of at most %d bytes without spaces or a fragment", MaxCheckPathLen)
		}
	}
	if h.ExpectStatus != 0 && (h.Type != CheckHTTP || h.ExpectStatus < 100 || h.ExpectStatus > 599) {
		return FieldErrorf(EINVALID, "health.expect_status", "is an HTTP status (100-599) of an http check")
	}
	switch {
	case h.Transport == "":
	case h.Type != CheckMCP:
		return FieldErrorf(EINVALID, "health.transport", "only an mcp check has a transport")
	case h.Transport != CheckMCPStreamable && h.Transport != CheckMCPSSE:
		return FieldErrorf(EINVALID, "health.transport", "must be streamable or sse")
	}
	if h.Interval != 0 && (h.Interval < MinCheckInterval || h.Interval > MaxCheckInterval) {
		return FieldErrorf(EINVALID, "health.interval", "must be between %v and %v", MinCheckInterval, MaxCheckInterval)
	}
	d := h.WithDefaults()
	if h.Timeout != 0 && (h.Timeout < MinCheckTimeout || h.Timeout > d.Interval) {
		return FieldErrorf(EINVALID, "health.timeout", "must be between %v and the interval (%v)", MinCheckTimeout, d.Interval)
	}
	if h.Retries < 0 || h.Retries > MaxCheckRetries {
		return FieldErrorf(EINVALID, "health.retries", "must be between 1 and %d", MaxCheckRetries)
	}
	if h.StartPeriod < 0 || h.StartPeriod > MaxCheckStartPeriod {
		return FieldErrorf(EINVALID, "health.start_period", "must be between 0 and %v", MaxCheckStartPeriod)
	}
	if h.OnUnhealthy != "" && h.OnUnhealthy != OnUnhealthyRestart {
		return FieldErrorf(EINVALID, "health.on_unhealthy", "must be restart or omitted")
	}
	return nil
}

// CheckPort returns the published port a check dials: the tcp port whose
// container port is h.Port, or the first tcp port when h.Port is 0. ports
// may be a spec's (host port 0 = allocated later) or an instance's resolved
// ones.
func CheckPort(h HealthCheck, ports []Port) (Port, bool) {
	for _, p := range ports {
		if p.Protocol != "tcp" && p.Protocol != "" {
			continue
		}
		if h.Port == 0 || p.ContainerPort == h.Port {
			return p, true
		}
	}
	return Port{}, false
}

// DefaultLegacyCheck is the check a legacy deploy (POST /tools, which has
// no health field) gets: tcp on the first published tcp port, none when
// nothing is published. tcp is chosen because it holds for any tool
// server; an mcp or http check on a tool that speaks neither would mark a
// working tool unhealthy.
func DefaultLegacyCheck(ports []Port) HealthCheck {
	if _, ok := CheckPort(HealthCheck{}, ports); !ok {
		return HealthCheck{}
	}
	return HealthCheck{Type: CheckTCP}
}

// HealthState is an instance's observed health.
type HealthState string

const (
	HealthUnknown   HealthState = ""          // no check, or not running
	HealthStarting  HealthState = "starting"  // within the start period, or no verdict yet
	HealthHealthy   HealthState = "healthy"   // the last probe succeeded
	HealthUnhealthy HealthState = "unhealthy" // Retries probes in a row failed
)

// HealthStatus is what the prober last concluded about an instance. It is
// observed state: the agent records it when State, LastError or ChangedAt
// change, never on every probe (LastLatency, ConsecutiveFailures and
// CheckedAt move with every probe and live in memory).
type HealthStatus struct {
	State               HealthState   `json:"state,omitempty"`
	LastError           string        `json:"last_error,omitempty"`
	LastLatency         time.Duration `json:"last_latency,omitempty"`
	ConsecutiveFailures int           `json:"consecutive_failures,omitempty"`
	ChangedAt           time.Time     `json:"changed_at,omitzero"` // when State last changed
	CheckedAt           time.Time     `json:"checked_at,omitzero"` // the last probe
	Detail              string        `json:"detail,omitempty"`    // e.g. "tools=3" for mcp
}

// Changed reports whether o differs from h in what is persisted: the
// state, the last error, the time of the last change.
func (h HealthStatus) Changed(o HealthStatus) bool {
	return h.State != o.State || h.LastError != o.LastError || !RegistryTime(h.ChangedAt).Equal(RegistryTime(o.ChangedAt))
}

// String renders h for logs: "unhealthy (3 failures: ...)".
func (h HealthStatus) String() string {
	if h.State == HealthUnknown {
		return "unknown"
	}
	if h.State == HealthUnhealthy {
		return fmt.Sprintf("unhealthy (%d failures: %s)", h.ConsecutiveFailures, h.LastError)
	}
	return string(h.State)
}

// EffectiveCheck is the check the agent runs for inst: its spec's, or —
// when the deploy set none (every legacy deploy, and a v1 deploy without a
// health object) — DefaultLegacyCheck on its published ports. The default
// is not written into the spec, so specs and hashes of existing instances
// stay as they were and a re-deploy of the same body stays idempotent; a
// v1 deploy opts out with {"type": "none"}.
func (i *Instance) EffectiveCheck() (c HealthCheck, isDefault bool) {
	if !i.Spec.Health.IsZero() {
		return i.Spec.Health, false
	}
	if i.Spec.MCP.IsStdio() {
		return DefaultBridgeCheck(i.Spec.MCP), true
	}
	return DefaultLegacyCheck(i.Ports), true
}

// DefaultBridgeCheck is the check of a stdio instance that set none: an
// mcp check (initialize, ping, tools/list) through the agent's bridge, so
// the bridge's session with the server in the container is what the
// health says; tcp on the bridge's port when the instance requires an MCP
// bearer token (the agent keeps only its hash and cannot present it).
// Port stays 0: the bridge's port is not a published container port
// (Instance.BridgeAddrPort).
func DefaultBridgeCheck(m MCP) HealthCheck {
	if m.TokenHash != "" {
		return HealthCheck{Type: CheckTCP}
	}
	return HealthCheck{Type: CheckMCP, Path: MCPBridgePath}
}
