package dtma

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrRegistry marks an EnsureImage error whose cause is the image registry
// (unreachable, refusing, not having the image) rather than the engine:
// such a failure must not be taken for the engine being down.
var ErrRegistry = errors.New("image registry")

// Labels DTMA puts on every container it creates. Env values never go into
// labels.
const (
	LabelManaged    = "dtma.managed"                  // "true"
	LabelHost       = "dtma.host"                     // the owning agent's host id
	LabelInstance   = "dtma.instance"                 // the instance name
	LabelInstanceID = "dtma.instance-id"              // the registry row's UUID
	LabelAccountID  = "dtma.account-tool-instance-id" // when set
	LabelSpecHash   = "dtma.spec-hash"                // Spec.Hash() of the requested spec (no env values)
	LabelEnvNames   = "dtma.env-names"                // comma-separated env names (never values)
	LabelPorts      = "dtma.ports"                    // JSON of the requested Spec.Ports
	LabelLimits     = "dtma.limits"                   // JSON of Spec.Limits, only when set
	LabelMCP        = "dtma.mcp"                      // JSON of Spec.MCP (token hash, bridge port), only when set
)

// IsReservedLabel reports whether k is one of DTMA's own label keys: they
// carry ownership, so no caller may set them and a container that has one
// was made by a DTMA agent.
func IsReservedLabel(k string) bool {
	switch k {
	case LabelManaged, LabelHost, LabelInstance, LabelInstanceID, LabelAccountID, LabelSpecHash, LabelEnvNames, LabelPorts:
		return true
	}
	return false
}

// PullPolicy says when a deploy pulls its image.
type PullPolicy string

const (
	PullMissing PullPolicy = "missing" // pull only when absent locally (default)
	PullAlways  PullPolicy = "always"  // pull; on failure fall back to a local copy
	PullNever   PullPolicy = "never"   // never pull; the image must be present
)

// ContainerConfig is what the agent asks the runtime to create.
type ContainerConfig struct {
	Name   string
	Image  string
	Env    map[string]string
	Ports  []Port // resolved; HostIP "" means the runtime's default
	Labels map[string]string
	// Limits are the resource limits to create it with (a zero field:
	// none); CapAdd the capabilities it keeps after all are dropped.
	Limits Limits
	CapAdd []string
	// Stdio creates it with stdin open (not closed after the first
	// attach) and no TTY, so its stdio can be attached to at any time
	// (an MCP stdio server, bridged by the agent).
	Stdio bool
}

// Container is what the runtime reports about one container.
type Container struct {
	ID           string
	Name         string // without the leading "/"
	Image        string // the image reference it was created from
	Labels       map[string]string
	Env          map[string]string
	Ports        []Port // configured bindings (HostConfig.PortBindings)
	State        DockerState
	StartedAt    time.Time
	FinishedAt   time.Time
	ExitCode     int
	RestartCount int
	CreatedAt    time.Time

	// Summary is true for a container as a list reports it: only ID,
	// Name, Image, Labels, State and CreatedAt are set; InspectContainer
	// gives the rest.
	Summary bool
}

// Observed returns the container's state as an Observed value.
func (c *Container) Observed() Observed {
	return Observed{
		DockerStatus: c.State,
		ContainerID:  c.ID,
		StartedAt:    c.StartedAt,
		FinishedAt:   c.FinishedAt,
		ExitCode:     c.ExitCode,
		RestartCount: c.RestartCount,
	}
}

// ContainerEvent is one container event from the runtime's event stream.
type ContainerEvent struct {
	ContainerID string
	Action      string // create, start, die, stop, kill, destroy, restart, ...
	Labels      map[string]string
	ExitCode    int // for "die"
	Time        time.Time
}

// LogOptions selects container output.
type LogOptions struct {
	Tail   int  // last N lines; <= 0 means all
	Follow bool // keep streaming until the context ends
}

// Runtime is the container engine (Docker). Implementation: docker.Runtime.
// Every error is an *Error: EUNAVAILABLE when the engine cannot be reached,
// ENOTFOUND for a missing container or image, ECONFLICT for a name clash.
//
// A Runtime is scoped to one host at construction: ListContainers and
// Events see only the containers labelled dtma.host=HostID().
type Runtime interface {
	// HostID returns the host this runtime lists and watches containers
	// of.
	HostID() string

	// Ping checks that the engine answers.
	Ping(ctx context.Context) error

	// EnsureImage makes image available locally according to policy. It
	// returns a warning (for example "pull failed, using the local copy")
	// when it fell back. EINVALID when the image is absent and cannot be
	// had (policy never, or the registry said it does not exist).
	EnsureImage(ctx context.Context, image string, policy PullPolicy) (warning string, err error)

	// CreateContainer creates (does not start) a container with restart
	// policy unless-stopped and DTMA's safe defaults. ECONFLICT when the
	// name is taken.
	CreateContainer(ctx context.Context, cfg ContainerConfig) (id string, err error)

	// StartContainer starts it; already is true when it was running.
	StartContainer(ctx context.Context, id string) (already bool, err error)

	// StopContainer stops it gracefully within timeout, then kills it;
	// already is true when it was not running.
	StopContainer(ctx context.Context, id string, timeout time.Duration) (already bool, err error)

	// RestartContainer stops (within timeout) and starts it.
	RestartContainer(ctx context.Context, id string, timeout time.Duration) error

	// RemoveContainer force-removes it; a container already gone is not an
	// error.
	RemoveContainer(ctx context.Context, id string) error

	// InspectContainer returns the container with that id or name;
	// ENOTFOUND when there is none.
	InspectContainer(ctx context.Context, idOrName string) (*Container, error)

	// ListContainers returns every container (running or not) labelled
	// dtma.host=HostID(), in one label-filtered call, as summaries (Summary
	// set: ID, Name, Image, Labels, State, CreatedAt). Containers of other
	// hosts or without labels are never returned.
	ListContainers(ctx context.Context) ([]*Container, error)

	// ContainerLogs returns the container's stdout and stderr as plain text
	// (Docker's stream framing removed), one line per log line.
	ContainerLogs(ctx context.Context, id string, opts LogOptions) (io.ReadCloser, error)

	// Attach attaches to a running stdio container's stdin and stdout
	// (Stdio in its config): reads give its stdout, writes go to its
	// stdin, stderr is copied to stderr (nil: discarded). Close detaches;
	// the container keeps running with stdin open. ECONFLICT when it is
	// not running or not a stdio container, ENOTFOUND when absent.
	Attach(ctx context.Context, id string, stderr io.Writer) (io.ReadWriteCloser, error)

	// Events streams container events for containers labelled
	// dtma.host=HostID() until ctx ends. The error channel receives one value
	// when the stream breaks; the caller resubscribes (and relists).
	Events(ctx context.Context) (<-chan ContainerEvent, <-chan error)
}
