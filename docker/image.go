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
//     warning naming the image and the reason, and no error;
//   - never: never pull; EINVALID when the image is absent.
//
// A pull that fails while the image is absent gives EINVALID when the
// registry says the image does not exist or may not be pulled (not found,
// manifest unknown, unauthorized, denied) and EUNAVAILABLE otherwise (the
// registry or the daemon cannot be reached). EINVALID for a malformed
// reference or an unknown policy.
func (r *Runtime) EnsureImage(ctx context.Context, image string, policy dtma.PullPolicy) (string, error) {
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return "", &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("image %q is not a valid reference: %v", image, err), Err: err}
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
			return "", dtma.Errorf(dtma.EINVALID, "image %s is not present locally and pull_policy is never", image)
		}
		return "", nil
	case dtma.PullAlways:
	default:
		return "", dtma.Errorf(dtma.EINVALID, "unknown pull policy %q", policy)
	}

	perr := r.pull(ctx, image)
	if perr == nil {
		return "", nil
	}
	if present {
		if ctx.Err() != nil {
			return "", r.wrap(perr, "pull image %s", image)
		}
		return fmt.Sprintf("pull of image %s failed (%s); using the local copy", image, reason(perr)), nil
	}
	if client.IsErrConnectionFailed(perr) || ctx.Err() != nil {
		return "", r.wrap(perr, "pull image %s", image)
	}
	if registryRefused(perr) {
		return "", &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("image %s cannot be pulled: %s", image, reason(perr)), Err: perr}
	}
	return "", &dtma.Error{Code: dtma.EUNAVAILABLE, Message: fmt.Sprintf("pull image %s: %s", image, reason(perr)), Err: perr}
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

// pull pulls image and drains the progress stream, returning the first
// error the daemon reports in it (errorDetail or error field) or the
// request's own error.
func (r *Runtime) pull(ctx context.Context, image string) error {
	resp, err := r.client.ImagePull(ctx, image, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	return pullStreamError(resp)
}

// pullMessage is one message of the pull progress stream; only the error
// fields matter here.
type pullMessage struct {
	Error       string `json:"error"`
	ErrorDetail *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// pullStreamError reads the stream to its end and returns the first error
// reported in it, or a read error.
func pullStreamError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return errors.New(m.Error)
		}
	}
}

// registryRefused reports whether a pull error means the registry answered
// that the image does not exist or may not be pulled, as opposed to not
// answering at all.
func registryRefused(err error) bool {
	if cerrdefs.IsNotFound(err) || cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) || cerrdefs.IsInvalidArgument(err) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"manifest unknown", "not found", "unauthorized", "denied", "repository does not exist", "name unknown", "invalid reference"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
