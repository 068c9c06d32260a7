package dtma

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// MCPTransport is how an instance's tool server speaks MCP.
type MCPTransport string

const (
	// MCPNone: not declared (the default; legacy deploys unless the
	// operator's DTMA_STDIO_IMAGES matches the image). The agent serves
	// nothing for it.
	MCPNone MCPTransport = "none"
	// MCPStdio: MCP over the container's stdin/stdout. The container is
	// created with stdin open and no TTY, and the agent bridges it to
	// Streamable HTTP on a host port of its own (see mcpbridge).
	MCPStdio MCPTransport = "stdio"
	// MCPStreamableHTTP and MCPSSE: the server speaks HTTP itself on
	// Port (a container port) at Path; the agent only records it.
	MCPStreamableHTTP MCPTransport = "streamable-http"
	MCPSSE            MCPTransport = "sse"
)

// MCPBridgePath is the URL path a stdio instance's bridge serves.
const MCPBridgePath = "/mcp"

// MCP declares an instance's MCP transport (v1 `mcp`). The zero value is
// "none": it is left out of Spec's canonical form, hash and diff, so specs
// stored before it existed keep their hash.
type MCP struct {
	Transport MCPTransport `json:"transport,omitempty"`
	// Path and Port: where an HTTP transport is served in the container
	// (Port is a container port of the spec). Not allowed for stdio.
	Path string `json:"path,omitempty"`
	Port int    `json:"port,omitempty"`
	// TokenHash is the hex SHA-256 of the instance's optional MCP bearer
	// token (v1 `mcp.token`, write-only): a stdio bridge then requires
	// `Authorization: Bearer <token>`. The token itself is never stored.
	TokenHash string `json:"token_sha256,omitempty"`
	// BridgePort is the host port the agent allocated for a stdio
	// instance's bridge: resolved state (like Instance.Ports), kept here so
	// that it is stored with the spec and recreates keep it. Never set by
	// a caller; not part of Equal, Diff or Hash.
	BridgePort int `json:"bridge_port,omitempty"`
}

// IsStdio reports whether the instance is bridged by the agent.
func (m MCP) IsStdio() bool { return m.Transport == MCPStdio }

// HashMCPToken returns the hex SHA-256 stored for an MCP bearer token.
func HashMCPToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CheckMCPToken reports, in constant time, whether token hashes to hash.
func CheckMCPToken(hash, token string) bool {
	want, err := hex.DecodeString(hash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(want, got[:]) == 1
}

// Minimum length of an MCP bearer token.
const MinMCPTokenLen = 16

// normalizeMCP makes "none" and the empty transport the zero value and
// trims the path.
func (m *MCP) normalize() {
	m.Transport = MCPTransport(strings.ToLower(strings.TrimSpace(string(m.Transport))))
	m.Path = strings.TrimSpace(m.Path)
	if m.Transport == "" || (m.Transport == MCPNone && m.Path == "" && m.Port == 0 && m.TokenHash == "" && m.BridgePort == 0) {
		*m = MCP{}
	}
}

// validateMCP checks the mcp object of a normalized spec; errors name
// mcp.transport, mcp.path, mcp.port or mcp.token.
func validateMCP(s Spec) error {
	m := s.MCP
	switch m.Transport {
	case "":
		return nil
	case MCPNone:
		if m.Path != "" || m.Port != 0 {
			return FieldErrorf(EINVALID, "mcp.transport", "none takes no path or port")
		}
		if m.TokenHash != "" {
			return FieldErrorf(EINVALID, "mcp.token", "only a stdio instance (bridged by the agent) takes a token")
		}
		return nil
	case MCPStdio:
		if m.Path != "" {
			return FieldErrorf(EINVALID, "mcp.path", "a stdio server has no path; the agent's bridge serves %s", MCPBridgePath)
		}
		if m.Port != 0 {
			return FieldErrorf(EINVALID, "mcp.port", "a stdio server has no port; the agent allocates the bridge's host port")
		}
		return nil
	case MCPStreamableHTTP, MCPSSE:
		if m.TokenHash != "" {
			return FieldErrorf(EINVALID, "mcp.token", "only a stdio instance (bridged by the agent) takes a token")
		}
		if m.Path != "" && (!strings.HasPrefix(m.Path, "/") || len(m.Path) > 1024 || strings.ContainsAny(m.Path, " ?#\x00")) {
			return FieldErrorf(EINVALID, "mcp.path", "must be an absolute URL path (at most 1024 bytes, no spaces, query or fragment)")
		}
		if m.Port != 0 {
			if m.Port < 1 || m.Port > 65535 {
				return FieldErrorf(EINVALID, "mcp.port", "must be between 1 and 65535")
			}
			found := false
			for _, p := range s.Ports {
				found = found || (p.ContainerPort == m.Port && p.Protocol == "tcp")
			}
			if !found {
				return FieldErrorf(EINVALID, "mcp.port", "must be the container_port of one of ports[] (tcp)")
			}
		}
		return nil
	}
	return FieldErrorf(EINVALID, "mcp.transport", "must be one of stdio, streamable-http, sse, none")
}

// StdioImages is the operator's default transport for legacy deploys
// (DTMA_STDIO_IMAGES): images matching one of the patterns (the policy
// file's pattern syntax, MatchImagePattern) are deployed as stdio.
type StdioImages []string

// Match reports whether image matches one of the patterns.
func (s StdioImages) Match(image string) bool {
	for _, p := range s {
		if MatchImagePattern(p, image) {
			return true
		}
	}
	return false
}

// public returns m without the token hash and the bridge port: what may
// go into the spec hash and labels.
func (m MCP) public() MCP { m.TokenHash, m.BridgePort = "", 0; return m }

// identity returns m without the bridge port (resolved state): what Equal
// compares.
func (m MCP) identity() MCP { m.BridgePort = 0; return m }

// MCPBridgeTarget is what the agent asks of a stdio instance's bridge.
type MCPBridgeTarget struct {
	InstanceID  string
	Name        string // for logs
	ContainerID string // attached to; a new id (recreate) re-attaches
	HostIP      string // "" = all interfaces
	Port        int    // host port the bridge listens on
	TokenHash   string // MCP.TokenHash
}

// MCPBridgeStatus is a bridge's state, for health and metrics.
type MCPBridgeStatus struct {
	Port         int
	Attached     bool   // the session to the server is up
	Sessions     int    // HTTP sessions open
	Attaches     uint64 // attaches so far (re-attaches after restarts included)
	MessagesIn   uint64 // from the server
	MessagesOut  uint64 // to the server
	BytesIn      uint64
	BytesOut     uint64
	SkippedLines uint64 // non-JSON lines the server printed
	Errors       uint64
	LastError    string
}

// MCPBridges runs the agent's stdio bridges, one per running stdio
// instance (implementation: mcpbridge.Host). Safe for concurrent use.
type MCPBridges interface {
	// Ensure makes sure the instance's bridge listens on the target's
	// host port and is attached (or attaching) to its container: a new
	// container id or a detached bridge attaches again at once. An error
	// means the port cannot be listened on.
	Ensure(ctx context.Context, t MCPBridgeTarget) error
	// Stop closes the instance's bridge, its listener and its sessions;
	// none is fine.
	Stop(instanceID string)
	// Status returns the bridge's state; ok is false when there is none.
	Status(instanceID string) (s MCPBridgeStatus, ok bool)
}

// PublishedPorts returns the instance's resolved ports and, for a stdio
// instance, its bridge's host port as one more tcp port with container
// port 0 (the agent serves it, not the container): what the legacy status
// and the heartbeat show as where the tool is reached.
func (i *Instance) PublishedPorts() []Port {
	out := append([]Port(nil), i.Ports...)
	if i.Spec.MCP.IsStdio() && i.Spec.MCP.BridgePort != 0 {
		out = append(out, Port{ContainerPort: 0, Protocol: "tcp", HostPort: i.Spec.MCP.BridgePort})
	}
	return out
}

// MCPBridgeReporter is implemented by a service that runs stdio bridges
// (agent.Agent): the HTTP face reads their state for metrics and health.
type MCPBridgeReporter interface {
	BridgeStatus(instanceID string) (MCPBridgeStatus, bool)
}
