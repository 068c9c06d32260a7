// Package runtimetest provides a fake dtma.Runtime for unit tests of code
// that drives containers (the agent): containers live in a map, events go
// to subscribers on channels, failures and delays are injected per method,
// every call is logged, and helpers change containers behind the caller's
// back the way `docker stop`, `docker rm -f` or a restart policy would.
//
// The fake keeps the Engine's semantics the agent depends on (see
// shared/reference/docker-engine-facts.md and the docker package): a start
// of a running container and a stop of a stopped one succeed with
// already=true; a create with a taken name is ECONFLICT; inspecting a
// missing container is ENOTFOUND while removing one is not an error; labels
// are fixed at create; a list returns summaries of the containers labelled
// for the host asked, never another host's; a daemon that is down answers
// every call with EUNAVAILABLE and breaks the event streams.
package runtimetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentopia/dtma"
)

// Method names, as used by FailNext, Fail, Delay, OnCall and the call log.
const (
	Ping              = "Ping"
	EnsureImage       = "EnsureImage"
	CreateContainer   = "CreateContainer"
	StartContainer    = "StartContainer"
	StopContainer     = "StopContainer"
	RestartContainer  = "RestartContainer"
	RemoveContainer   = "RemoveContainer"
	InspectContainer  = "InspectContainer"
	ListContainers    = "ListContainers"
	ContainerLogs     = "ContainerLogs"
	Events            = "Events"
	eventBufferLength = 1024 // Docker's per-subscriber buffer
)

// Call is one logged call: the method and what it was about (a container
// id or name, an image, or the host id for ListContainers and Events).
type Call struct {
	Method string
	Arg    string
}

// String returns "Method(arg)".
func (c Call) String() string { return c.Method + "(" + c.Arg + ")" }

// Runtime is a fake dtma.Runtime. The zero value is not usable; create it
// with New. It is safe for concurrent use.
type Runtime struct {
	host string

	mu         sync.Mutex
	now        func() time.Time
	seq        int
	containers map[string]*dtma.Container // by id
	images     map[string]bool            // present locally
	pullErr    map[string]error           // images whose pull fails, and how
	logs       map[string]string
	failNext   map[string][]error
	fail       map[string]error
	delay      map[string]time.Duration
	hooks      map[string]func(arg string)
	after      map[string]func(arg string)
	down       bool
	calls      []Call
	subs       []*subscriber
	attach     func(c *dtma.Container) (io.ReadWriteCloser, error) // SetAttach
}

type subscriber struct {
	host string
	ev   chan dtma.ContainerEvent
	errc chan error
}

var _ dtma.Runtime = (*Runtime)(nil)

// New returns an empty fake daemon scoped to hostID: the host Labels
// labels containers for and the one ListContainers and Events see; every image is pullable until SetPullError says
// otherwise.
func New(hostID string) *Runtime {
	return &Runtime{
		host:       hostID,
		now:        time.Now,
		containers: map[string]*dtma.Container{},
		images:     map[string]bool{},
		pullErr:    map[string]error{},
		logs:       map[string]string{},
		failNext:   map[string][]error{},
		fail:       map[string]error{},
		delay:      map[string]time.Duration{},
		hooks:      map[string]func(string){},
		after:      map[string]func(string){},
	}
}

// SetNow makes the fake read time from now (StartedAt, FinishedAt,
// CreatedAt, event times); the default is time.Now.
func (r *Runtime) SetNow(now func() time.Time) {
	r.mu.Lock()
	r.now = now
	r.mu.Unlock()
}

// FailNext makes the next call of method fail with err (after it is
// logged); calls queue up in order.
func (r *Runtime) FailNext(method string, err error) {
	r.mu.Lock()
	r.failNext[method] = append(r.failNext[method], err)
	r.mu.Unlock()
}

// Fail makes every call of method fail with err until Fail(method, nil).
func (r *Runtime) Fail(method string, err error) {
	r.mu.Lock()
	if err == nil {
		delete(r.fail, method)
	} else {
		r.fail[method] = err
	}
	r.mu.Unlock()
}

// Delay makes every call of method wait d (or until its context ends:
// EUNAVAILABLE, as the real client answers) before it acts. 0 removes it.
func (r *Runtime) Delay(method string, d time.Duration) {
	r.mu.Lock()
	r.delay[method] = d
	r.mu.Unlock()
}

// OnCall runs fn with the call's argument whenever method is called,
// before it acts (and before an injected failure). fn may call the fake's
// helpers; it lets a test act in the middle of an operation. nil removes it.
func (r *Runtime) OnCall(method string, fn func(arg string)) {
	r.mu.Lock()
	if fn == nil {
		delete(r.hooks, method)
	} else {
		r.hooks[method] = fn
	}
	r.mu.Unlock()
}

// OnReturn runs fn with the call's argument whenever a call of method has
// acted, before the caller sees the answer (not for a call failed on entry:
// daemon down, injected failure, context ended). It lets a test
// change the daemon between, say, a list and what the caller does with it.
// nil removes it.
func (r *Runtime) OnReturn(method string, fn func(arg string)) {
	r.mu.Lock()
	if fn == nil {
		delete(r.after, method)
	} else {
		r.after[method] = fn
	}
	r.mu.Unlock()
}

// leave runs the OnReturn hook of method, outside the lock.
func (r *Runtime) leave(method, arg string) {
	r.mu.Lock()
	fn := r.after[method]
	r.mu.Unlock()
	if fn != nil {
		fn(arg)
	}
}

// SetDown makes the daemon unreachable (every call EUNAVAILABLE, event
// streams broken) or reachable again.
func (r *Runtime) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	if down {
		r.breakLocked(Unavailable("docker daemon stopped"))
	}
	r.mu.Unlock()
}

// BreakEvents breaks every event stream with err, as a daemon restart or a
// dropped connection does: each subscriber's error channel receives it and
// both channels close.
func (r *Runtime) BreakEvents(err error) {
	r.mu.Lock()
	r.breakLocked(err)
	r.mu.Unlock()
}

func (r *Runtime) breakLocked(err error) {
	for _, s := range r.subs {
		s.errc <- err
		close(s.errc)
		close(s.ev)
	}
	r.subs = nil
}

// Subscribers returns how many event streams are open.
func (r *Runtime) Subscribers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs)
}

// Unavailable returns the error the fake answers with while down.
func Unavailable(what string) error {
	return dtma.Errorf(dtma.EUNAVAILABLE, "docker unavailable: %s", what)
}

// Calls returns the call log, oldest first.
func (r *Runtime) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// CallsOf returns the arguments of the logged calls of method, oldest first.
func (r *Runtime) CallsOf(method string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		if c.Method == method {
			out = append(out, c.Arg)
		}
	}
	return out
}

// ResetCalls empties the call log.
func (r *Runtime) ResetCalls() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// enter logs a call and applies the hook, delay and injected failures, in
// that order. A non-nil error is the call's answer.
func (r *Runtime) enter(ctx context.Context, method, arg string) error {
	r.mu.Lock()
	r.calls = append(r.calls, Call{method, arg})
	hook, d := r.hooks[method], r.delay[method]
	r.mu.Unlock()
	if hook != nil {
		hook(arg)
	}
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Unavailable(fmt.Sprintf("%s %s: %v", method, arg, ctx.Err()))
		}
	}
	if err := ctx.Err(); err != nil {
		return Unavailable(fmt.Sprintf("%s %s: %v", method, arg, err))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return Unavailable(method + " " + arg)
	}
	if q := r.failNext[method]; len(q) > 0 {
		r.failNext[method] = q[1:]
		return q[0]
	}
	return r.fail[method]
}

// Ping implements dtma.Runtime.
func (r *Runtime) Ping(ctx context.Context) error {
	if err := r.enter(ctx, Ping, ""); err != nil {
		return err
	}
	r.leave(Ping, "")
	return nil
}

// AddImage makes images present locally.
func (r *Runtime) AddImage(images ...string) {
	r.mu.Lock()
	for _, i := range images {
		r.images[i] = true
	}
	r.mu.Unlock()
}

// HasImage reports whether image is present locally.
func (r *Runtime) HasImage(image string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.images[image]
}

// SetPullError makes pulls of image fail (nil: pull succeeds, the
// default): with err's code EINVALID the registry says the image does not
// exist (EnsureImage answers EINVALID on field "image"), otherwise it cannot
// be reached (EUNAVAILABLE). Either error wraps dtma.ErrRegistry, as
// docker.Runtime's do.
func (r *Runtime) SetPullError(image string, err error) {
	r.mu.Lock()
	if err == nil {
		delete(r.pullErr, image)
	} else {
		r.pullErr[image] = err
	}
	r.mu.Unlock()
}

// EnsureImage implements dtma.Runtime with docker.Runtime's policy rules:
// missing pulls only an absent image; always pulls and falls back to a
// local copy with a warning; never fails with EINVALID when absent.
func (r *Runtime) EnsureImage(ctx context.Context, image string, policy dtma.PullPolicy) (string, error) {
	if err := r.enter(ctx, EnsureImage, image); err != nil {
		return "", err
	}
	defer r.leave(EnsureImage, image)
	r.mu.Lock()
	defer r.mu.Unlock()
	present := r.images[image]
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
	if err := r.pullErr[image]; err != nil {
		if present {
			return fmt.Sprintf("pull of image %s failed (%s); using the local copy", image, dtma.ErrorMessage(err)), nil
		}
		// As docker.Runtime: summarised, wrapping dtma.ErrRegistry (the
		// registry failed, not the engine); EINVALID names the field.
		cause := fmt.Errorf("%w: %v", dtma.ErrRegistry, err)
		if dtma.ErrorCode(err) == dtma.EINVALID {
			return "", &dtma.Error{Code: dtma.EINVALID, Field: "image", Message: fmt.Sprintf("image %s cannot be pulled: %s", image, dtma.ErrorMessage(err)), Err: cause}
		}
		return "", &dtma.Error{Code: dtma.EUNAVAILABLE, Message: fmt.Sprintf("pull image %s: %s", image, dtma.ErrorMessage(err)), Err: cause}
	}
	r.images[image] = true
	return "", nil
}

// newID returns a deterministic 64-hex container id.
func (r *Runtime) newIDLocked(name string) string {
	r.seq++
	sum := sha256.Sum256([]byte(name + "#" + strconv.Itoa(r.seq)))
	return hex.EncodeToString(sum[:])
}

func (r *Runtime) byRefLocked(ref string) *dtma.Container {
	if c := r.containers[ref]; c != nil {
		return c
	}
	name := strings.TrimPrefix(ref, "/")
	for _, c := range r.containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func notFound(ref string) error {
	return dtma.Errorf(dtma.ENOTFOUND, "No such container: %s", ref)
}

// CreateContainer implements dtma.Runtime: ECONFLICT when the name is
// taken, ENOTFOUND when the image is not present. The container is
// "created", never started, with the labels, env and port bindings asked.
func (r *Runtime) CreateContainer(ctx context.Context, cfg dtma.ContainerConfig) (string, error) {
	if err := r.enter(ctx, CreateContainer, cfg.Name); err != nil {
		return "", err
	}
	defer r.leave(CreateContainer, cfg.Name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byRefLocked(cfg.Name) != nil {
		return "", dtma.Errorf(dtma.ECONFLICT, "create container %s: the container name %q is already in use", cfg.Name, "/"+cfg.Name)
	}
	if !r.images[cfg.Image] {
		return "", dtma.Errorf(dtma.ENOTFOUND, "create container %s: No such image: %s", cfg.Name, cfg.Image)
	}
	c := &dtma.Container{
		ID:        r.newIDLocked(cfg.Name),
		Name:      cfg.Name,
		Image:     cfg.Image,
		Labels:    copyMap(cfg.Labels),
		Env:       copyMap(cfg.Env),
		Ports:     append([]dtma.Port(nil), cfg.Ports...),
		State:     dtma.DockerCreated,
		CreatedAt: r.now().UTC(),
	}
	dtma.SortPorts(c.Ports)
	r.containers[c.ID] = c
	r.emitLocked(c, "create", 0)
	return c.ID, nil
}

// StartContainer implements dtma.Runtime: already is true for a running
// container (Docker's 304).
func (r *Runtime) StartContainer(ctx context.Context, id string) (bool, error) {
	if err := r.enter(ctx, StartContainer, id); err != nil {
		return false, err
	}
	defer r.leave(StartContainer, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byRefLocked(id)
	if c == nil {
		return false, notFound(id)
	}
	if c.State == dtma.DockerRunning || c.State == dtma.DockerRestarting {
		return true, nil
	}
	r.startLocked(c)
	return false, nil
}

func (r *Runtime) startLocked(c *dtma.Container) {
	c.State = dtma.DockerRunning
	c.StartedAt = r.now().UTC()
	c.ExitCode = 0
	r.emitLocked(c, "start", 0)
}

// StopContainer implements dtma.Runtime: already is true when it was not
// running (Docker's 304). The container exits with code 0.
func (r *Runtime) StopContainer(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	if err := r.enter(ctx, StopContainer, id); err != nil {
		return false, err
	}
	defer r.leave(StopContainer, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byRefLocked(id)
	if c == nil {
		return false, notFound(id)
	}
	if c.State != dtma.DockerRunning && c.State != dtma.DockerRestarting && c.State != dtma.DockerPaused {
		return true, nil
	}
	r.exitLocked(c, 0)
	r.emitLocked(c, "stop", 0)
	return false, nil
}

func (r *Runtime) exitLocked(c *dtma.Container, code int) {
	c.State = dtma.DockerExited
	c.FinishedAt = r.now().UTC()
	c.ExitCode = code
	r.emitLocked(c, "die", code)
}

// RestartContainer implements dtma.Runtime: stops a running container and
// starts it; a stopped one is just started. A restart asked for by a
// client does not count in RestartCount (only the restart policy's do).
func (r *Runtime) RestartContainer(ctx context.Context, id string, timeout time.Duration) error {
	if err := r.enter(ctx, RestartContainer, id); err != nil {
		return err
	}
	defer r.leave(RestartContainer, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byRefLocked(id)
	if c == nil {
		return notFound(id)
	}
	if c.State == dtma.DockerRunning {
		r.exitLocked(c, 0)
	}
	r.startLocked(c)
	r.emitLocked(c, "restart", 0)
	return nil
}

// RemoveContainer implements dtma.Runtime: force-removes; a missing
// container is not an error.
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	if err := r.enter(ctx, RemoveContainer, id); err != nil {
		return err
	}
	defer r.leave(RemoveContainer, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byRefLocked(id); c != nil {
		r.removeLocked(c)
	}
	return nil
}

func (r *Runtime) removeLocked(c *dtma.Container) {
	if c.State == dtma.DockerRunning {
		r.exitLocked(c, 137)
	}
	delete(r.containers, c.ID)
	delete(r.logs, c.ID)
	r.emitLocked(c, "destroy", 0)
}

// InspectContainer implements dtma.Runtime: a full copy of the container
// with that id or name; ENOTFOUND when there is none.
func (r *Runtime) InspectContainer(ctx context.Context, idOrName string) (*dtma.Container, error) {
	if err := r.enter(ctx, InspectContainer, idOrName); err != nil {
		return nil, err
	}
	defer r.leave(InspectContainer, idOrName)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byRefLocked(idOrName)
	if c == nil {
		return nil, notFound(idOrName)
	}
	return clone(c), nil
}

// HostID implements dtma.Runtime: the host New was given.
func (r *Runtime) HostID() string { return r.host }

// ListContainers implements dtma.Runtime: summaries of the containers
// labelled dtma.host=HostID(), by name.
func (r *Runtime) ListContainers(ctx context.Context) ([]*dtma.Container, error) {
	hostID := r.host
	if err := r.enter(ctx, ListContainers, hostID); err != nil {
		return nil, err
	}
	defer r.leave(ListContainers, hostID)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*dtma.Container
	for _, c := range r.containers {
		if c.Labels[dtma.LabelHost] != hostID {
			continue
		}
		out = append(out, &dtma.Container{
			ID: c.ID, Name: c.Name, Image: c.Image, Labels: copyMap(c.Labels),
			State: c.State, CreatedAt: c.CreatedAt, Summary: true,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SetLogs sets the container's output.
func (r *Runtime) SetLogs(id, text string) {
	r.mu.Lock()
	r.logs[id] = text
	r.mu.Unlock()
}

// ContainerLogs implements dtma.Runtime: the text SetLogs gave, its last
// opts.Tail lines when Tail > 0. Follow is ignored (the stream ends).
func (r *Runtime) ContainerLogs(ctx context.Context, id string, opts dtma.LogOptions) (io.ReadCloser, error) {
	if err := r.enter(ctx, ContainerLogs, id); err != nil {
		return nil, err
	}
	defer r.leave(ContainerLogs, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byRefLocked(id)
	if c == nil {
		return nil, notFound(id)
	}
	text := r.logs[c.ID]
	if opts.Tail > 0 {
		lines := strings.SplitAfter(text, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		text = strings.Join(lines, "")
	}
	return io.NopCloser(strings.NewReader(text)), nil
}

// Events implements dtma.Runtime: the events of containers labelled
// dtma.host=HostID(), from now on, until ctx ends (both channels close) or the
// stream breaks (BreakEvents, SetDown: one error, then both close). Like
// Docker, an event a subscriber has no room for (1024 buffered) is dropped.
func (r *Runtime) Events(ctx context.Context) (<-chan dtma.ContainerEvent, <-chan error) {
	hostID := r.host
	s := &subscriber{host: hostID, ev: make(chan dtma.ContainerEvent, eventBufferLength), errc: make(chan error, 1)}
	if err := r.enter(ctx, Events, hostID); err != nil {
		if ctx.Err() == nil {
			s.errc <- err // an ended context closes both without an error
		}
		close(s.errc)
		close(s.ev)
		return s.ev, s.errc
	}
	defer r.leave(Events, hostID)
	r.mu.Lock()
	r.subs = append(r.subs, s)
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, x := range r.subs {
			if x == s {
				r.subs = append(r.subs[:i], r.subs[i+1:]...)
				close(s.errc)
				close(s.ev)
				return
			}
		}
	}()
	return s.ev, s.errc
}

func (r *Runtime) emitLocked(c *dtma.Container, action string, exitCode int) {
	ev := dtma.ContainerEvent{ContainerID: c.ID, Action: action, Labels: c.Labels, ExitCode: exitCode, Time: r.now()}
	for _, s := range r.subs {
		if s.host != c.Labels[dtma.LabelHost] {
			continue
		}
		e := ev
		e.Labels = copyMap(ev.Labels)
		select {
		case s.ev <- e:
		default: // dropped, as Docker drops events for slow subscribers
		}
	}
}

// Labels returns the labels DTMA puts on a container of this fake's host
// (dtma.managed, dtma.host) plus the key, value pairs given.
func (r *Runtime) Labels(kv ...string) map[string]string {
	l := map[string]string{dtma.LabelManaged: "true", dtma.LabelHost: r.host}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// AddContainer puts a container in the daemon behind the caller's back, as
// `docker create`/`docker run` would, and returns its id. Its labels are
// exactly c.Labels (see Labels; nil for a legacy container). Zero fields
// get defaults: an id, state created, CreatedAt now; a running container
// without StartedAt started now. Its image becomes present. A taken name
// panics: it is a test bug.
func (r *Runtime) AddContainer(c dtma.Container) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.Name != "" && r.byRefLocked(c.Name) != nil {
		panic("runtimetest: AddContainer: name " + c.Name + " is taken")
	}
	n := clone(&c)
	n.Summary = false
	if n.ID == "" {
		n.ID = r.newIDLocked(n.Name)
	}
	if n.State == "" {
		n.State = dtma.DockerCreated
	}
	if n.CreatedAt.IsZero() {
		n.CreatedAt = r.now().UTC()
	}
	if n.State == dtma.DockerRunning && n.StartedAt.IsZero() {
		n.StartedAt = r.now().UTC()
	}
	if n.Image != "" {
		r.images[n.Image] = true
	}
	r.containers[n.ID] = n
	r.emitLocked(n, "create", 0)
	if n.State == dtma.DockerRunning {
		r.emitLocked(n, "start", 0)
	}
	return n.ID
}

// Container returns a copy of the container with that id or name, nil when
// there is none.
func (r *Runtime) Container(ref string) *dtma.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byRefLocked(ref); c != nil {
		return clone(c)
	}
	return nil
}

// Containers returns copies of every container, by name.
func (r *Runtime) Containers() []*dtma.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*dtma.Container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, clone(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SetState changes a container's state behind the caller's back, as
// `docker stop`/`docker start` (or the daemon) would: running sets
// StartedAt to now, exited and dead set FinishedAt; the matching events
// are sent. It panics when there is no such container.
func (r *Runtime) SetState(ref string, state dtma.DockerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.mustLocked(ref)
	switch state {
	case dtma.DockerRunning:
		r.startLocked(c)
	case dtma.DockerExited, dtma.DockerDead:
		r.exitLocked(c, c.ExitCode)
		c.State = state
	default:
		c.State = state
	}
}

// Crash simulates the restart policy restarting a crashed container: a die
// event with exitCode, then the container runs again with RestartCount one
// higher, a new StartedAt and, as Docker reports it, exit code 0.
func (r *Runtime) Crash(ref string, exitCode int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.mustLocked(ref)
	r.exitLocked(c, exitCode)
	c.RestartCount++
	r.startLocked(c)
}

// Update applies fn to the container (no event is sent); it panics when
// there is no such container. fn must not change the id.
func (r *Runtime) Update(ref string, fn func(c *dtma.Container)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r.mustLocked(ref))
}

// Remove deletes a container behind the caller's back (`docker rm -f`);
// nothing happens when there is none.
func (r *Runtime) Remove(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byRefLocked(ref); c != nil {
		r.removeLocked(c)
	}
}

func (r *Runtime) mustLocked(ref string) *dtma.Container {
	c := r.byRefLocked(ref)
	if c == nil {
		panic("runtimetest: no container " + ref)
	}
	return c
}

func clone(c *dtma.Container) *dtma.Container {
	n := *c
	n.Labels = copyMap(c.Labels)
	n.Env = copyMap(c.Env)
	n.Ports = append([]dtma.Port(nil), c.Ports...)
	return &n
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
