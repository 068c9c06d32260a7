package dtma

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// DefaultCapabilities returns the capabilities every tool container keeps
// after all others are dropped: what an entrypoint needs to fix file
// ownership and drop to an unprivileged user (gosu, su-exec, chown of a
// data directory). Servers that run as a fixed user and listen on a port
// above 1023 (node, python, static Go images) need none of them; NET_RAW,
// MKNOD, SETFCAP, SETPCAP, SYS_CHROOT, KILL, AUDIT_WRITE, FSETID and
// NET_BIND_SERVICE are gone. A policy file may give some back per image.
func DefaultCapabilities() []string {
	return []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
}

// policyCapabilities are the capabilities a policy may add: Docker's own
// default set, so that a policy can never make a tool more powerful than a
// plain `docker run` would.
var policyCapabilities = map[string]bool{
	"AUDIT_WRITE": true, "CHOWN": true, "DAC_OVERRIDE": true, "FOWNER": true, "FSETID": true,
	"KILL": true, "MKNOD": true, "NET_BIND_SERVICE": true, "NET_RAW": true, "SETFCAP": true,
	"SETGID": true, "SETPCAP": true, "SETUID": true, "SYS_CHROOT": true,
}

// Policy grants images matching a pattern more than the host's defaults.
// It never grants privileged mode, host namespaces, devices or binds: it
// has no way to say so.
type Policy struct {
	Images []ImageRule
}

// ImageRule is one entry of a policy: for images matching Pattern, CapAdd
// is added to DefaultCapabilities and each set field of Limits replaces
// the host's default limit and raises the ceiling on per-deploy overrides.
type ImageRule struct {
	Pattern string
	CapAdd  []string
	Limits  Limits
}

// Match returns the first rule whose pattern matches image, or nil. A nil
// policy matches nothing.
func (p *Policy) Match(image string) *ImageRule {
	if p == nil {
		return nil
	}
	for i := range p.Images {
		if MatchImagePattern(p.Images[i].Pattern, image) {
			return &p.Images[i]
		}
	}
	return nil
}

// MatchImagePattern reports whether image, as written in the request,
// matches pattern, where "*" stands for any run of characters ("/"
// included) and everything else is literal: "ghcr.io/org/*" matches
// "ghcr.io/org/tool:1" and "ghcr.io/org/team/tool@sha256:...".
func MatchImagePattern(pattern, image string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == image
	}
	if !strings.HasPrefix(image, parts[0]) {
		return false
	}
	rest := image[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}

// policyFile is the JSON form of a Policy.
type policyFile struct {
	Images []struct {
		Pattern string          `json:"pattern"`
		CapAdd  []string        `json:"cap_add"`
		Memory  json.RawMessage `json:"memory"`
		PIDs    int64           `json:"pids"`
		CPUs    json.RawMessage `json:"cpus"`
	} `json:"images"`
}

// ParsePolicy reads a policy file:
//
//	{"images": [{"pattern": "ghcr.io/org/*", "cap_add": ["NET_BIND_SERVICE"],
//	             "memory": "2g", "pids": 1024, "cpus": 2}]}
//
// Unknown fields are errors (there is no field for privileged mode, host
// networking or binds, and a typo must not pass silently); capabilities
// are upper-cased, "CAP_" optional, and must be in Docker's default set;
// limits are checked like a per-deploy override. Errors name the entry
// (images[i].field).
func ParsePolicy(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f policyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("policy: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("policy: must hold exactly one JSON object")
	}
	p := &Policy{}
	for i, e := range f.Images {
		at := fmt.Sprintf("policy: images[%d]", i)
		if strings.TrimSpace(e.Pattern) == "" {
			return nil, fmt.Errorf("%s.pattern: is required", at)
		}
		r := ImageRule{Pattern: strings.TrimSpace(e.Pattern)}
		for _, c := range e.CapAdd {
			name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
			if !policyCapabilities[name] {
				allowed := make([]string, 0, len(policyCapabilities))
				for k := range policyCapabilities {
					allowed = append(allowed, k)
				}
				sort.Strings(allowed)
				return nil, fmt.Errorf("%s.cap_add: %q is not allowed (one of %s)", at, c, strings.Join(allowed, ", "))
			}
			r.CapAdd = append(r.CapAdd, name)
		}
		if len(e.Memory) > 0 {
			n, err := MemoryJSON(e.Memory)
			if err != nil {
				return nil, fmt.Errorf("%s.memory: %v", at, err)
			}
			r.Limits.Memory = n
		}
		r.Limits.PIDs = e.PIDs
		if len(e.CPUs) > 0 {
			n, err := CPUsJSON(e.CPUs)
			if err != nil {
				return nil, fmt.Errorf("%s.cpus: %v", at, err)
			}
			r.Limits.MilliCPUs = n
		}
		if e.PIDs < 0 {
			return nil, fmt.Errorf("%s.pids: must be at least %d", at, MinPIDs)
		}
		if err := ValidateLimits(r.Limits); err != nil {
			return nil, fmt.Errorf("%s.%s", at, strings.TrimPrefix(ErrorMessage(err), "limits."))
		}
		p.Images = append(p.Images, r)
	}
	return p, nil
}

// MemoryJSON reads a memory size given in JSON either as a string with a
// unit ("512m", see ParseMemory) or as a whole number of bytes.
func MemoryJSON(raw json.RawMessage) (int64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return ParseMemory(s)
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("must be a size like \"512m\" or a whole number of bytes")
	}
	if n < 0 {
		return 0, fmt.Errorf("must not be negative")
	}
	return n, nil
}

// CPUsJSON reads a CPU count given in JSON as a number (1.5) or a string
// ("1.5") into thousandths of a CPU (see ParseCPUs).
func CPUsJSON(raw json.RawMessage) (int64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, fmt.Errorf("must be a number of CPUs like 1 or 0.5")
		}
		s = n.String()
	}
	return ParseCPUs(s)
}
