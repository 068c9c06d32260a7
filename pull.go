package dtma

import (
	"context"
	"log/slog"
	"strings"
)

// RegistryAuth is a credential for one pull from a private image registry:
// a username with a password (or access token), or an identity token
// (OAuth refresh token). It travels with the request that carries it only:
// it is never stored, logged, put in a label, hashed into a Spec or
// returned. Its String, GoString and LogValue show whether each part is
// set, never a value.
type RegistryAuth struct {
	Username      string
	Password      string
	IdentityToken string
}

// Validate checks that the credential is one of the two shapes. EINVALID
// naming registry_auth.username, .password or .identity_token.
func (a *RegistryAuth) Validate() error {
	switch {
	case a.IdentityToken != "" && a.Password != "":
		return FieldErrorf(EINVALID, "registry_auth.identity_token", "give a password or an identity_token, not both")
	case a.IdentityToken == "" && a.Password == "":
		return FieldErrorf(EINVALID, "registry_auth.password", "a password or an identity_token is required")
	case a.Password != "" && strings.TrimSpace(a.Username) == "":
		return FieldErrorf(EINVALID, "registry_auth.username", "required with a password")
	case len(a.Username) > 1024 || len(a.Password) > 16384 || len(a.IdentityToken) > 16384:
		return FieldErrorf(EINVALID, "registry_auth", "too long")
	}
	return nil
}

func (a RegistryAuth) String() string {
	set := func(s string) string {
		if s == "" {
			return "unset"
		}
		return "set"
	}
	return "RegistryAuth{username " + set(a.Username) + ", password " + set(a.Password) + ", identity_token " + set(a.IdentityToken) + "}"
}

// GoString is String, so %#v shows no secret either.
func (a RegistryAuth) GoString() string { return a.String() }

// LogValue is String, for log/slog.
func (a RegistryAuth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// PullProgress is one progress message of an image pull, in the Docker
// daemon's terms: Status ("Pulling fs layer", "Downloading",
// "Download complete", "Pull complete", "Digest: ...", ...) for the layer
// ID (empty for messages about the whole image), and bytes Current of
// Total when the daemon reports them.
type PullProgress struct {
	ID      string `json:"id,omitempty"`
	Status  string `json:"status"`
	Current int64  `json:"current,omitempty"`
	Total   int64  `json:"total,omitempty"`
}

// PullOptions are the options of the pulls one deploy request causes:
// the deploy's registry credential (nil: the host's, from its Docker
// config.json) and a function told of every progress message (nil: none;
// it must return quickly). They ride in the request's context (see
// WithPullOptions), which the deploy path hands down to
// Runtime.EnsureImage: so they reach the pull of that request and no
// other — a recreate by the reconciler pulls with the host's credentials.
type PullOptions struct {
	Auth     *RegistryAuth
	Progress func(PullProgress)
}

type pullOptionsKey struct{}

// WithPullOptions returns ctx carrying o for the pulls made on its behalf.
func WithPullOptions(ctx context.Context, o PullOptions) context.Context {
	return context.WithValue(ctx, pullOptionsKey{}, o)
}

// PullOptionsFrom returns the options WithPullOptions put in ctx (zero
// when none).
func PullOptionsFrom(ctx context.Context) PullOptions {
	o, _ := ctx.Value(pullOptionsKey{}).(PullOptions)
	return o
}
