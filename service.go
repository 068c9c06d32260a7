package dtma

import (
	"context"
	"io"
	"time"
)

// DeployRequest asks for an instance to exist and run with Spec.
type DeployRequest struct {
	Name                  string
	AccountToolInstanceID string // optional UUID
	Spec                  Spec
	PullPolicy            PullPolicy // "" means PullMissing
	// OnPortConflict says what to do with a requested host port that cannot
	// be had (the agent's own port, another instance's, one bound on the
	// host). It is how the request is served, not what is asked: it is not
	// part of the Spec nor of its hash. "" means PortConflictReject.
	OnPortConflict PortConflictPolicy
}

// PortConflictPolicy is what a deploy does with a requested host port it
// cannot have.
type PortConflictPolicy string

const (
	// PortConflictReject fails the deploy with ECONFLICT naming the port
	// (v1: callers ask for what they mean).
	PortConflictReject PortConflictPolicy = "reject"
	// PortConflictRemap publishes the container port on a port allocated
	// from the agent's range instead, and says so in the log (the legacy
	// route: one backend path asks for the agent's own port on every
	// deploy, and never reads the port back from the answer).
	PortConflictRemap PortConflictPolicy = "remap"
)

// AdoptRequest brings an existing container that DTMA did not create (the
// legacy agent's, which carry no labels) under management without
// recreating or restarting it.
type AdoptRequest struct {
	Name                  string // instance name to record
	AccountToolInstanceID string // optional UUID
	Image                 string // expected image; a mismatch is reported, not guessed at
	Container             string // container name or id to look for; "" tries names derived from Name
	DryRun                bool
}

// AdoptResult says what an adoption did (or, for a dry run, would do).
type AdoptResult struct {
	Action   string    // "adopt", "unchanged" (already managed), or "skip"
	Reason   string    // why, for "skip"
	Instance *Instance // the instance (would-be instance for a dry run)
}

// Health is the agent's view of its dependencies.
type Health struct {
	Version        string
	HostID         string
	DockerOK       bool
	DockerError    string
	RegistryOK     bool
	RegistryError  string
	LastObservedAt time.Time // last successful full relist; zero when never
}

// InstanceService is what the HTTP API serves. Implementation:
// agent.Agent. A ref is an instance name, an account tool instance id or an
// instance id. Errors are *Error (see ErrorCode).
type InstanceService interface {
	// Deploy creates and starts an instance, or, when one with the same name
	// (or account id) and an identical spec exists, makes sure it runs and
	// returns it with created=false. ECONFLICT when the name or account id
	// is used with a different spec, or a host port is taken; EINVALID for
	// bad input.
	Deploy(ctx context.Context, req DeployRequest) (inst *Instance, created bool, err error)

	// FindInstance returns the instance a ref names; ENOTFOUND when none.
	FindInstance(ctx context.Context, ref string) (*Instance, error)

	// ListInstances returns this host's instances, oldest first, in a
	// slice of the caller's. The instances may be shared with the
	// service's memory: a caller must not change them (Clone one first).
	ListInstances(ctx context.Context) ([]*Instance, error)

	// ListFleet returns the instances of every host sharing the registry.
	ListFleet(ctx context.Context) ([]*Instance, error)

	// StartInstance starts it; changed is false when it was already running.
	StartInstance(ctx context.Context, ref string) (inst *Instance, changed bool, err error)

	// StopInstance stops it gracefully within timeout (0: the default);
	// changed is false when it was already stopped.
	StopInstance(ctx context.Context, ref string, timeout time.Duration) (inst *Instance, changed bool, err error)

	// RestartInstance restarts it (starts it when stopped).
	RestartInstance(ctx context.Context, ref string) (*Instance, error)

	// RemoveInstance force-removes the container, then the record. ENOTFOUND
	// when the ref names nothing.
	RemoveInstance(ctx context.Context, ref string) error

	// InstanceLogs streams the container's output.
	InstanceLogs(ctx context.Context, ref string, opts LogOptions) (io.ReadCloser, error)

	// AdoptContainer brings an unlabelled container under management.
	AdoptContainer(ctx context.Context, req AdoptRequest) (*AdoptResult, error)

	// Health reports on Docker and the registry.
	Health(ctx context.Context) Health
}
