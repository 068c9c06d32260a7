package dtma

import (
	"regexp"
	"strings"
)

// DefaultRegistryHost is the registry an image reference without a host
// part is pulled from (Docker Hub).
const DefaultRegistryHost = "docker.io"

// ImageRef is an image reference split into its parts.
type ImageRef struct {
	// Host is the registry host[:port] ("ghcr.io", "127.0.0.1:5000");
	// DefaultRegistryHost when the reference names none.
	Host string
	// Explicit is true when the reference itself names the host.
	Explicit bool
	Path     string // repository path, "library/x" style or "x"
	Tag      string // "" when none
	Digest   string // "" when none
}

// The reference grammar of github.com/distribution/reference, kept here so
// that the domain depends on nothing.
var (
	domainComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	hostPattern     = regexp.MustCompile(`^(?:` + domainComponent + `(?:\.` + domainComponent + `)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$`)
	pathPattern     = regexp.MustCompile(`^[a-zA-Z0-9]+(?:(?:[._]|__|-+)[a-zA-Z0-9]+)*(?:/[a-zA-Z0-9]+(?:(?:[._]|__|-+)[a-zA-Z0-9]+)*)*$`)
	tagPattern      = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	digestPattern   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$`)
)

// ParseImageRef splits an image reference. It follows Docker's rule for
// the host: the first "/"-separated component is a registry host when it
// contains "." or ":", is "localhost", or has an upper-case letter.
// EINVALID on field "image" when the reference is malformed, including an
// empty host before a port or a "/" (":5000/x", "/x:1").
func ParseImageRef(image string) (ImageRef, error) {
	bad := func(why string) (ImageRef, error) {
		return ImageRef{}, FieldErrorf(EINVALID, "image", "is not a valid image reference: %s", why)
	}
	var ref ImageRef
	rest := image
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		ref.Digest = rest[i+1:]
		rest = rest[:i]
		if !digestPattern.MatchString(ref.Digest) {
			return bad("malformed digest")
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		ref.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagPattern.MatchString(ref.Tag) {
			return bad("malformed tag")
		}
	}
	first, after, hasSlash := strings.Cut(rest, "/")
	if hasSlash && (first == "" || strings.HasPrefix(first, ":")) {
		return bad("the registry host is missing")
	}
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost" || first != strings.ToLower(first)) {
		if !hostPattern.MatchString(first) {
			return bad("malformed registry host")
		}
		ref.Host, ref.Explicit, rest = first, true, after
	} else {
		ref.Host = DefaultRegistryHost
	}
	if rest == "" || !pathPattern.MatchString(rest) {
		return bad("malformed repository path")
	}
	ref.Path = rest
	return ref, nil
}
