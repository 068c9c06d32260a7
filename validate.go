package dtma

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on request fields.
const (
	MaxNameLen  = 255
	MaxImageLen = 512
	MaxEnvVars  = 512
	MaxEnvBytes = 256 << 10 // all names and values together
	MaxPorts    = 64
)

// Normalize fills defaults in place: protocol "tcp" (lower-cased), pull
// policy "missing", trimmed image and account id (lower-cased, as UUIDs
// compare case-insensitively). Call it before Validate.
func (r *DeployRequest) Normalize() {
	r.Spec.Image = strings.TrimSpace(r.Spec.Image)
	r.AccountToolInstanceID = strings.ToLower(strings.TrimSpace(r.AccountToolInstanceID))
	if r.PullPolicy == "" {
		r.PullPolicy = PullMissing
	}
	for i := range r.Spec.Ports {
		p := &r.Spec.Ports[i]
		p.Protocol = strings.ToLower(strings.TrimSpace(p.Protocol))
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		p.HostIP = strings.TrimSpace(p.HostIP)
	}
	if len(r.Spec.Env) == 0 {
		r.Spec.Env = nil
	}
	r.Spec.MCP.normalize()
}

// Validate checks a normalized request. It returns an EINVALID *Error whose
// Field names the first offending field, in the v1 API's field names
// (name, account_tool_instance_id, image, pull_policy, env.NAME,
// ports[i].container_port, ...). Env values are never quoted in messages.
func (r *DeployRequest) Validate() error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	if r.AccountToolInstanceID != "" && !IsUUID(r.AccountToolInstanceID) {
		return FieldErrorf(EINVALID, "account_tool_instance_id", "must be a UUID")
	}
	if err := ValidateImage(r.Spec.Image); err != nil {
		return err
	}
	switch r.PullPolicy {
	case PullMissing, PullAlways, PullNever:
	default:
		return FieldErrorf(EINVALID, "pull_policy", "must be one of missing, always, never")
	}
	if len(r.Spec.Env) > MaxEnvVars {
		return FieldErrorf(EINVALID, "env", "at most %d variables", MaxEnvVars)
	}
	size := 0
	for _, k := range r.Spec.EnvNames() {
		if err := ValidateEnvName(k); err != nil {
			return err
		}
		v := r.Spec.Env[k]
		if strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return FieldErrorf(EINVALID, "env."+k, "value must be valid UTF-8 without NUL bytes")
		}
		size += len(k) + len(v)
	}
	if size > MaxEnvBytes {
		return FieldErrorf(EINVALID, "env", "at most %d bytes in all", MaxEnvBytes)
	}
	if err := ValidateLimits(r.Spec.Limits); err != nil {
		return err
	}
	if err := validateMCP(r.Spec); err != nil {
		return err
	}
	if len(r.Spec.Ports) > MaxPorts {
		return FieldErrorf(EINVALID, "ports", "at most %d ports", MaxPorts)
	}
	seen := map[string]int{}
	for i, p := range r.Spec.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return FieldErrorf(EINVALID, f+".container_port", "must be between 1 and 65535")
		}
		switch p.Protocol {
		case "tcp", "udp":
		case "sctp":
			// Docker can only publish sctp where the kernel has the
			// module; the agent cannot probe or promise that, so it is
			// the caller's error rather than a 5xx from Docker.
			return FieldErrorf(EINVALID, f+".protocol", "sctp is not published by this agent; use tcp or udp")
		default:
			return FieldErrorf(EINVALID, f+".protocol", "must be tcp or udp")
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return FieldErrorf(EINVALID, f+".host_port", "must be between 0 (allocate) and 65535")
		}
		if p.HostIP != "" {
			if _, err := netip.ParseAddr(p.HostIP); err != nil {
				return FieldErrorf(EINVALID, f+".host_ip", "must be an IP address")
			}
		}
		if p.HostPort != 0 {
			key := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
			if j, dup := seen[key]; dup {
				return FieldErrorf(EINVALID, f+".host_port", "host port %s is also requested by ports[%d]", key, j)
			}
			seen[key] = i
		}
	}
	return ValidateHealthCheck(r.Spec.Health, r.Spec.Ports)
}

// ValidateName checks an instance name: 1 to MaxNameLen bytes of printable
// UTF-8, not only spaces, no control characters, no "/", not "." or "..",
// no U+FFFD (what JSON decoding turns invalid UTF-8 into, so a name sent as
// invalid UTF-8 is refused rather than stored mangled), and not shaped like
// a UUID: instance ids and account tool instance ids are UUIDs, and a name
// of that shape could capture another instance's reference.
func ValidateName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return FieldErrorf(EINVALID, "name", "is required")
	case len(name) > MaxNameLen:
		return FieldErrorf(EINVALID, "name", "at most %d bytes", MaxNameLen)
	case !utf8.ValidString(name) || strings.ContainsRune(name, utf8.RuneError):
		return FieldErrorf(EINVALID, "name", "must be valid UTF-8 (invalid bytes are replaced by U+FFFD, which is refused)")
	case strings.Contains(name, "/"):
		return FieldErrorf(EINVALID, "name", "must not contain '/'")
	case name == "." || name == "..":
		return FieldErrorf(EINVALID, "name", "must not be '.' or '..'")
	case IsUUID(name):
		return FieldErrorf(EINVALID, "name", "must not have the shape of a UUID (ids and account tool instance ids do)")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return FieldErrorf(EINVALID, "name", "must not contain control characters")
		}
	}
	return nil
}

// ValidateImage checks an image reference against Docker's grammar
// ([host[:port]/]path[:tag][@digest], lower-case path) without contacting
// anything: non-empty, at most MaxImageLen bytes, ASCII without spaces, and
// a registry host, when the first component names one, that is not empty
// ("/x:1", ":5000/x" are refused). Every error names the field "image".
func ValidateImage(image string) error {
	if image == "" {
		return FieldErrorf(EINVALID, "image", "is required")
	}
	if len(image) > MaxImageLen {
		return FieldErrorf(EINVALID, "image", "at most %d bytes", MaxImageLen)
	}
	for _, r := range image {
		if r <= ' ' || r == 0x7f || r > 0x7e {
			return FieldErrorf(EINVALID, "image", "must not contain spaces or non-ASCII characters")
		}
	}
	ref, err := ParseImageRef(image)
	if err != nil {
		return err
	}
	if ref.Path != strings.ToLower(ref.Path) {
		return FieldErrorf(EINVALID, "image", "repository name must be lower-case")
	}
	return nil
}

// ValidateEnvName checks an environment variable name: [A-Za-z_] then
// [A-Za-z0-9_.-], at most 255 bytes.
func ValidateEnvName(name string) error {
	f := "env." + name
	if name == "" {
		return FieldErrorf(EINVALID, "env", "variable names must not be empty")
	}
	if len(name) > 255 {
		return FieldErrorf(EINVALID, "env", "variable name longer than 255 bytes")
	}
	for i, r := range name {
		ok := r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') ||
			(i > 0 && ((r >= '0' && r <= '9') || r == '.' || r == '-'))
		if !ok {
			return FieldErrorf(EINVALID, f, "is not a valid variable name")
		}
	}
	return nil
}

// IsUUID reports whether s is a UUID in its canonical 8-4-4-4-12 hex form.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
				return false
			}
		}
	}
	return true
}

// NewUUID returns a random (version 4) UUID in canonical form.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never happens on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
