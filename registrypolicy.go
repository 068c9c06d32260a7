package dtma

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// RegistryPolicy decides which registry hosts the agent lets Docker pull
// from. An image reference is a request the Docker daemon carries out from
// the host's network, so by default a reference whose registry host is
// loopback, link-local, private (RFC 1918, IPv6 ULA) or unspecified — as an
// IP literal, as "localhost", or as a name resolving there — is refused:
// otherwise any token holder could aim the daemon's HTTP client at services
// inside the host or its network. Allow lists exceptions (a private
// registry); Deny refuses hosts outright, and wins over Allow.
//
// Patterns are "host" (any port), "host:port", "*.example.com" (any
// sub-domain) or a CIDR prefix ("10.0.0.0/8", IP literals only). Matching is
// case-insensitive. The zero value is the default policy.
type RegistryPolicy struct {
	Allow []string
	Deny  []string

	// Lookup resolves a host name; nil uses net.DefaultResolver. It is
	// called with a deadline of ResolveTimeout.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// ResolveTimeout bounds a resolution (default 3 s).
	ResolveTimeout time.Duration
}

// ParseRegistryPatterns splits a comma-separated pattern list and checks
// each pattern's shape. The error names the offending pattern.
func ParseRegistryPatterns(v string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		if strings.Contains(p, "/") {
			if _, err := netip.ParsePrefix(p); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix", p)
			}
		} else if !hostPattern.MatchString(strings.TrimPrefix(p, "*.")) {
			return nil, fmt.Errorf("%q is not host, host:port, *.domain or a CIDR prefix", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// CheckImage returns nil when image may be pulled under the policy. It
// refuses with EINVALID on field "image", naming the registry host and the
// reason, a malformed reference, a denied host, and (unless allowed) a host
// that is or resolves to a loopback, link-local, private or unspecified
// address. The implicit default registry (no host in the reference) is not
// resolved. A name the agent cannot resolve is not refused: it cannot be
// aimed anywhere by this agent, and the daemon's pull then fails as an
// unreachable registry.
func (p *RegistryPolicy) CheckImage(ctx context.Context, image string) error {
	ref, err := ParseImageRef(image)
	if err != nil {
		return err
	}
	host, port := splitRegistryHost(ref.Host)
	refuse := func(format string, args ...any) error {
		return FieldErrorf(EINVALID, "image", "registry host %s is refused: %s", ref.Host, fmt.Sprintf(format, args...))
	}
	if p.matches(p.Deny, host, port) {
		return refuse("denied by DTMA_REGISTRY_DENY")
	}
	if p.matches(p.Allow, host, port) || !ref.Explicit {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := internalAddr(ip); why != "" {
			return refuse("%s address (allow it with DTMA_REGISTRY_ALLOW)", why)
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return refuse("loopback name (allow it with DTMA_REGISTRY_ALLOW)")
	}
	timeout := p.ResolveTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lookup := p.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := lookup(rctx, host)
	if err != nil {
		return nil // unresolvable here: nothing this agent could aim at
	}
	for _, a := range addrs {
		if why := internalAddr(a); why != "" {
			return refuse("it resolves to a %s address (allow it with DTMA_REGISTRY_ALLOW)", why)
		}
	}
	return nil
}

// matches reports whether host[:port] matches one of the patterns.
func (p *RegistryPolicy) matches(patterns []string, host, port string) bool {
	ip, ipErr := netip.ParseAddr(host)
	for _, pat := range patterns {
		pat = strings.ToLower(pat)
		if strings.Contains(pat, "/") {
			if pfx, err := netip.ParsePrefix(pat); err == nil && ipErr == nil && pfx.Contains(ip.Unmap()) {
				return true
			}
			continue
		}
		ph, pp := splitRegistryHost(pat)
		if pp != "" && pp != port {
			continue
		}
		if strings.HasPrefix(ph, "*.") {
			if strings.HasSuffix(host, ph[1:]) {
				return true
			}
			continue
		}
		if ph == host {
			return true
		}
	}
	return false
}

// splitRegistryHost splits "host:port" ("[::1]:5000") into a lower-case
// host without brackets and the port ("" when none).
func splitRegistryHost(hp string) (host, port string) {
	hp = strings.ToLower(hp)
	if h, p, err := net.SplitHostPort(hp); err == nil {
		return strings.Trim(h, "[]"), p
	}
	return strings.Trim(hp, "[]"), ""
}

// sharedAddressSpace is RFC 6598's carrier-grade NAT range, private in
// practice (cloud VPCs use it).
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// internalAddr names the kind of a non-public address ("loopback",
// "private", ...), or returns "" for an address a registry may have.
func internalAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsPrivate() || sharedAddressSpace.Contains(ip):
		return "private"
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	return ""
}
