package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// EnsureImage makes image available locally according to policy:
//
//   - missing (or ""): pull only when the image is absent locally;
//   - always: pull; when the pull fails but a local copy exists, return a
//     warning naming the image and the kind of failure, and no error;
//   - never: never pull; EINVALID when the image is absent.
//
// A pull that fails while the image is absent is summarised, never echoing
// the daemon's or the registry's text (a registry's answer is whatever its
// operator, or an attacker who named it, wants it to be): EINVALID on field
// "image" when the registry says the image does not exist or may not be
// pulled (not found, manifest unknown, unauthorized, denied), EUNAVAILABLE
// with a message about the registry otherwise (unreachable, failing). Those
// errors wrap dtma.ErrRegistry. EUNAVAILABLE without it when the daemon
// itself cannot be reached. EINVALID for a malformed reference or an unknown
// policy.
func (r *Runtime) EnsureImage(ctx context.Context, image string, policy dtma.PullPolicy) (string, error) {
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return "", &dtma.Error{Code: dtma.EINVALID, Field: "image", Message: fmt.Sprintf("image %q is not a valid reference", image), Err: err}
	}
	present, err := r.imagePresent(ctx, image)
	if err != nil {
		return "", err
	}
	switch policy {
	case dtma.PullMissing, "":
		if present {
			return "", nil
		}
	case dtma.PullNever:
		if !present {
			return "", dtma.FieldErrorf(dtma.EINVALID, "image", "image %s is not present locally and pull_policy is never", image)
		}
		return "", nil
	case dtma.PullAlways:
	default:
		return "", dtma.Errorf(dtma.EINVALID, "unknown pull policy %q", policy)
	}

	opts := dtma.PullOptionsFrom(ctx)
	host := registryHost(image)
	auth, err := r.pullAuth(ctx, host, opts.Auth)
	if err != nil {
		return "", fmt.Errorf("pull image %s: %w", image, err)
	}
	perr := r.pull(ctx, image, auth, opts.Progress)
	if perr == nil {
		return "", nil
	}
	if client.IsErrConnectionFailed(perr) || ctx.Err() != nil {
		return "", r.wrap(perr, "pull image %s", image)
	}
	kind, code := pullFailure(perr, image)
	if present {
		return fmt.Sprintf("pull of image %s failed (%s); using the local copy", image, kind), nil
	}
	cause := fmt.Errorf("%w %s: %s", dtma.ErrRegistry, host, truncate(reason(perr), 300))
	switch {
	case code == dtma.EINVALID && kind == kindRefused:
		// Wrong or missing credentials: name the registry, and the
		// deploy's credential when it carried one.
		field := "image"
		if opts.Auth != nil {
			field = "registry_auth"
		}
		return "", &dtma.Error{Code: dtma.EINVALID, Field: field, Message: fmt.Sprintf("image %s cannot be pulled: registry %s %s", image, host, kind), Err: cause}
	case code == dtma.EINVALID:
		return "", &dtma.Error{Code: dtma.EINVALID, Field: "image", Message: fmt.Sprintf("image %s cannot be pulled: %s", image, kind), Err: cause}
	default:
		return "", &dtma.Error{Code: dtma.EUNAVAILABLE, Message: fmt.Sprintf("pull image %s: %s", image, kind), Err: cause}
	}
}

// registryHost returns the registry host an image reference is pulled
// from ("docker.io" when it names none).
func registryHost(image string) string {
	if named, err := reference.ParseNormalizedNamed(image); err == nil {
		return reference.Domain(named)
	}
	return "the registry"
}

// truncate cuts s to at most n bytes (for logs; never shown to callers).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// imagePresent reports whether the image is in the daemon's store.
func (r *Runtime) imagePresent(ctx context.Context, image string) (bool, error) {
	_, err := r.client.ImageInspect(ctx, image)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	}
	return false, r.wrap(err, "inspect image %s", image)
}

// pull pulls image with the X-Registry-Auth value auth ("" for none) and
// drains the progress stream, telling progress (when not nil) of each
// message, returning the first error the daemon reports in it
// (errorDetail or error field) or the request's own error.
func (r *Runtime) pull(ctx context.Context, image, auth string, progress func(dtma.PullProgress)) error {
	resp, err := r.client.ImagePull(ctx, image, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return err
	}
	defer resp.Close()
	return pullStreamError(resp, progress)
}

// pullMessage is one message of the pull progress stream.
type pullMessage struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// pullStreamError reads the stream to its end, telling progress (when not
// nil) of every status message, and returns the first error reported in
// it, or a read error.
func pullStreamError(r io.Reader, progress func(dtma.PullProgress)) error {
	dec := json.NewDecoder(r)
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if progress != nil && m.Status != "" {
			progress(dtma.PullProgress{ID: m.ID, Status: m.Status, Current: m.ProgressDetail.Current, Total: m.ProgressDetail.Total})
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return errors.New(m.Error)
		}
	}
}

// kindRefused is pullFailure's kind for an authentication failure.
const kindRefused = "refused access (unauthorized or denied)"

// pullFailure summarises a failed pull in words of our own — the registry's
// or daemon's text is never passed on — and the error code it deserves:
// EINVALID when the registry answered that the image does not exist or may
// not be pulled, EUNAVAILABLE when it could not be reached or failed.
func pullFailure(err error, image string) (kind, code string) {
	msg := strings.ToLower(err.Error())
	// The image's own name must not steer the verdict
	// ("ghcr.io/a/denied-tool" is not a denial).
	if named, perr := reference.ParseNormalizedNamed(image); perr == nil {
		msg = strings.ReplaceAll(msg, strings.ToLower(reference.Path(named)), "")
		msg = strings.ReplaceAll(msg, strings.ToLower(reference.Domain(named)), "")
	}
	msg = strings.ReplaceAll(msg, strings.ToLower(image), "")
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(msg, w) {
				return true
			}
		}
		return false
	}
	switch {
	case cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) ||
		has("unauthorized", "denied", "authentication required", "no basic auth credentials"):
		return kindRefused, dtma.EINVALID
	case cerrdefs.IsNotFound(err) || has("manifest unknown", "not found", "repository does not exist", "name unknown", "no such image"):
		return "the registry does not have it (not found)", dtma.EINVALID
	case cerrdefs.IsInvalidArgument(err) || has("invalid reference"):
		return "the registry rejected the reference", dtma.EINVALID
	}
	return "the registry could not be reached or failed", dtma.EUNAVAILABLE
}
