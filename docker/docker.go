// Package docker implements dtma.Runtime on the Docker Engine API, using
// Docker's official Go client (github.com/moby/moby/client).
//
// Every error it returns is a *dtma.Error: EUNAVAILABLE when the daemon
// cannot be reached (or did not answer before the context ended), ENOTFOUND
// for a missing container or image, ECONFLICT for a name clash or a state
// conflict, EINVALID for a request Docker rejects, EINTERNAL otherwise. The
// daemon's cause stays reachable with errors.Is/As. Env values never appear
// in errors, labels or logs.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// Options configures a Runtime.
type Options struct {
	// Host is the daemon address ("unix:///var/run/docker.sock",
	// "tcp://127.0.0.1:2375"); a bare absolute path means a unix socket.
	// "" means DOCKER_HOST (with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH) or the
	// default socket.
	Host string
	// HostID scopes the Runtime to one DTMA host: ListContainers and
	// Events see only containers labelled dtma.host=HostID. "" leaves it
	// unscoped, for callers that only create and inspect; those two calls
	// then fail with EINVALID.
	HostID string
	// DefaultHostIP is the host address ports are published on when a Port
	// has no HostIP; "" means Docker's default (all interfaces).
	DefaultHostIP string
	// ExtraLabels are added to every container created, for example
	// dtma.test=<run id> in tests. ContainerConfig.Labels win on a clash.
	ExtraLabels map[string]string

	// Network is NetworkIsolated ("" means it too) or NetworkBridge.
	Network string
	// NetworkShardSize is how many containers one isolated network takes
	// (default DefaultShardSize, at most MaxShardSize).
	NetworkShardSize int
	// NetworkSubnets, when set, is an IPv4 pool the isolated networks'
	// subnets are cut from (each sized for a shard: a /22 for 1000); unset,
	// Docker's default address pools are used.
	NetworkSubnets string

	// DockerConfig is the path of a Docker CLI config.json whose
	// credentials (auths entries, credHelpers, credsStore) are used for
	// pulls that carry no credential of their own; "" means none.
	DockerConfig string
}

// Runtime is a dtma.Runtime backed by a Docker daemon. It is safe for
// concurrent use. Create it with New and release it with Close.
type Runtime struct {
	client        *client.Client
	hostID        string
	defaultHostIP netip.Addr
	extraLabels   map[string]string

	isolated   bool
	shardSize  int
	subnets    netip.Prefix // zero: Docker's pools
	subnetBits int
	nets       networks

	dockerConfig string // Options.DockerConfig
}

var _ dtma.Runtime = (*Runtime)(nil)

// HostID implements dtma.Runtime: Options.HostID.
func (r *Runtime) HostID() string { return r.hostID }

// errUnscoped is the error of ListContainers and Events on a Runtime made
// without Options.HostID.
func errUnscoped(call string) error {
	return &dtma.Error{Code: dtma.EINVALID, Message: call + ": the docker runtime has no host id (Options.HostID)"}
}

// statusKey is the context key under which a call asks the client's
// response hook to record the HTTP status code of its request (Docker
// reports "already started/stopped" only as 304 Not Modified).
type statusKey struct{}

// New returns a Runtime talking to the daemon named by opts.Host, with API
// version negotiation (it works with Engine API 1.40 and later). It does not
// contact the daemon; call Ping for that. EINVALID for a malformed Host or
// DefaultHostIP.
func New(opts Options) (*Runtime, error) {
	r := &Runtime{hostID: opts.HostID, extraLabels: make(map[string]string, len(opts.ExtraLabels)), dockerConfig: opts.DockerConfig}
	for k, v := range opts.ExtraLabels {
		r.extraLabels[k] = v
	}
	if opts.DefaultHostIP != "" {
		ip, err := netip.ParseAddr(opts.DefaultHostIP)
		if err != nil {
			return nil, &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("default host ip %q is not an IP address", opts.DefaultHostIP), Err: err}
		}
		r.defaultHostIP = ip
	}

	switch opts.Network {
	case "", NetworkIsolated:
		r.isolated = true
	case NetworkBridge:
	default:
		return nil, &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("network mode %q: must be %s or %s", opts.Network, NetworkIsolated, NetworkBridge)}
	}
	r.shardSize = opts.NetworkShardSize
	if r.shardSize == 0 {
		r.shardSize = DefaultShardSize
	}
	if r.shardSize < 1 || r.shardSize > MaxShardSize {
		return nil, &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("network shard size %d: must be from 1 to %d", r.shardSize, MaxShardSize)}
	}
	if opts.NetworkSubnets != "" {
		pool, err := netip.ParsePrefix(opts.NetworkSubnets)
		if err == nil {
			err = checkSubnets(pool, r.shardSize)
		}
		if err != nil {
			return nil, &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("network subnets %q: %v", opts.NetworkSubnets, err)}
		}
		r.subnets, r.subnetBits = pool.Masked(), SubnetBits(r.shardSize)
	}

	copts := []client.Opt{
		client.FromEnv, // the client negotiates the API version by default (Engine API 1.40+)
		client.WithHTTPResponseHook(recordStatus),
	}
	if host := opts.Host; host != "" {
		if strings.HasPrefix(host, "/") {
			host = "unix://" + host
		}
		copts = append(copts, client.WithHost(host))
	}
	c, err := client.New(copts...)
	if err != nil {
		return nil, &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("docker client for host %q: %v", opts.Host, err), Err: err}
	}
	r.client = c
	return r, nil
}

// recordStatus stores a response's status code where the request's context
// asked for it (see statusKey).
func recordStatus(resp *http.Response) {
	if resp == nil || resp.Request == nil {
		return
	}
	if p, ok := resp.Request.Context().Value(statusKey{}).(*int); ok {
		*p = resp.StatusCode
	}
}

// withStatus returns a context whose request's HTTP status is written to
// the returned pointer.
func withStatus(ctx context.Context) (context.Context, *int) {
	code := new(int)
	return context.WithValue(ctx, statusKey{}, code), code
}

// Close releases the client's idle connections.
func (r *Runtime) Close() error { return r.client.Close() }

// Ping checks that the daemon answers (and negotiates the API version).
// EUNAVAILABLE when it does not.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.client.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return r.wrap(err, "ping docker")
	}
	return nil
}

// wrap turns a client error into a *dtma.Error whose message says what was
// being done ("start dtma-foo") and why. The cause is kept for errors.Is.
func (r *Runtime) wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf(format, args...)
	var de *dtma.Error
	if errors.As(err, &de) {
		return &dtma.Error{Code: de.Code, Field: de.Field, Message: op + ": " + de.Message, Err: err}
	}
	code := classify(err)
	msg := op + ": " + reason(err)
	if code == dtma.EUNAVAILABLE {
		msg = "docker unavailable: " + msg
	}
	return &dtma.Error{Code: code, Message: msg, Err: err}
}

// classify maps a client error to a dtma error code.
func classify(err error) string {
	switch {
	case isUnavailable(err):
		return dtma.EUNAVAILABLE
	case cerrdefs.IsNotFound(err):
		return dtma.ENOTFOUND
	case cerrdefs.IsConflict(err), cerrdefs.IsAlreadyExists(err):
		return dtma.ECONFLICT
	case cerrdefs.IsInvalidArgument(err), cerrdefs.IsFailedPrecondition(err):
		return dtma.EINVALID
	case cerrdefs.IsUnavailable(err):
		return dtma.EUNAVAILABLE
	}
	return dtma.EINTERNAL
}

// isUnavailable reports whether err means the daemon could not be reached
// or did not answer in time.
func isUnavailable(err error) bool {
	if client.IsErrConnectionFailed(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// EOF: the daemon (or the socket in between) went away mid-call.
		return true
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}

// reason returns the daemon's message without the client's "Error response
// from daemon: " prefix.
func reason(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "Error response from daemon: ")
	return s
}
