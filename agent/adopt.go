package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentopia/dtma"
)

// AdoptContainer implements dtma.InstanceService: it brings a container the
// legacy agent created (no labels, named after the instance) under
// management without recreating or restarting it. Labels cannot be added
// to an existing container, so the instance is tracked by container id
// (Tracking container_id) until the agent next recreates it. It is
// idempotent: adopting an already adopted container answers "unchanged".
//
// Only what is provably the requested tool is adopted. EINVALID (naming the
// field) when the name, account id or image is invalid, the image is
// missing, or container is neither a Docker container name nor a full
// 64-hex id. The container must then be found under exactly the name or id
// given (Docker also resolves id prefixes: such a match is ignored), carry
// none of DTMA's labels, have a name derived from the instance name (as the
// legacy agent named its containers) and run the requested image; otherwise
// the answer is "skip" with the reason, and nothing is recorded.
func (a *Agent) AdoptContainer(ctx context.Context, req dtma.AdoptRequest) (*dtma.AdoptResult, error) {
	req.Image = strings.TrimSpace(req.Image)
	req.AccountToolInstanceID = strings.ToLower(strings.TrimSpace(req.AccountToolInstanceID))
	if err := dtma.ValidateName(req.Name); err != nil {
		return nil, err
	}
	if req.AccountToolInstanceID != "" && !dtma.IsUUID(req.AccountToolInstanceID) {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "account_tool_instance_id", "must be a UUID")
	}
	if req.Image == "" {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "image", "is required: a container is adopted only when it runs the image the mapping names")
	}
	if err := dtma.ValidateImage(req.Image); err != nil {
		return nil, err
	}
	if req.Container != "" && !validContainerRef(req.Container) {
		return nil, dtma.FieldErrorf(dtma.EINVALID, "container", "must be a Docker container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, optionally with a leading '/') or a full 64-hex container id")
	}
	unlock, err := a.lockInstance(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := a.requireDocker(ctx); err != nil {
		return nil, err
	}

	var c *dtma.Container
	var tried []string
	for _, cand := range adoptCandidates(req) {
		tried = append(tried, cand)
		found, err := a.rt.InspectContainer(ctx, cand)
		if err == nil && exactContainer(found, cand) {
			c = found
			break
		}
		if err != nil && dtma.ErrorCode(err) != dtma.ENOTFOUND {
			return nil, fmt.Errorf("adopt %s: %w", req.Name, err)
		}
	}
	skip := func(format string, args ...any) (*dtma.AdoptResult, error) {
		return &dtma.AdoptResult{Action: "skip", Reason: fmt.Sprintf(format, args...)}, nil
	}
	if c == nil {
		return skip("no container named %s", strings.Join(tried, " or "))
	}
	if existing := a.view.lookup(req.Name); existing != nil && existing.Name == req.Name {
		if existing.ContainerID == c.ID {
			return &dtma.AdoptResult{Action: "unchanged", Instance: existing}, nil
		}
		return skip("instance %q is already managed with another container (%s)", req.Name, existing.ContainerName)
	}
	if req.AccountToolInstanceID != "" {
		if existing := a.view.lookup(req.AccountToolInstanceID); existing != nil {
			return skip("account tool instance %s is already managed as instance %q", req.AccountToolInstanceID, existing.Name)
		}
	}
	for k := range c.Labels {
		if dtma.IsReservedLabel(k) {
			return skip("container %s carries DTMA's labels (it belongs to a DTMA agent)", c.Name)
		}
	}
	for _, inst := range a.view.shared() {
		if inst.ContainerID == c.ID {
			return skip("container %s is already managed as instance %q", c.Name, inst.Name)
		}
	}
	if !derivedName(req.Name, c.Name) {
		return skip("container %s is not named after instance %q", c.Name, req.Name)
	}
	if c.Image != req.Image {
		return skip("container %s runs image %s, the mapping says %s", c.Name, c.Image, req.Image)
	}

	spec := dtma.Spec{Image: c.Image, Ports: append([]dtma.Port(nil), c.Ports...)}
	if len(c.Env) > 0 {
		spec.Env = c.Env
	}
	desired := dtma.DesiredStopped
	if c.State == dtma.DockerRunning || c.State == dtma.DockerRestarting || c.State == dtma.DockerPaused {
		desired = dtma.DesiredRunning
	}
	inst := &dtma.Instance{
		ID:                    dtma.NewUUID(),
		HostID:                a.hostID,
		Name:                  req.Name,
		AccountToolInstanceID: req.AccountToolInstanceID,
		ContainerName:         c.Name,
		Spec:                  spec,
		SpecHash:              spec.Hash(),
		Ports:                 append([]dtma.Port(nil), c.Ports...),
		DesiredState:          desired,
		Tracking:              dtma.TrackContainerID,
		Observed:              normObserved(c.Observed()),
	}
	inst.Status = inst.SettledStatus()
	if req.DryRun {
		return &dtma.AdoptResult{Action: "adopt", Instance: inst}, nil
	}
	a.createMu.Lock()
	defer a.createMu.Unlock()
	inst.ObservedAt = nowUTC() // memory only: the registry does not keep it
	if err := a.view.create(ctx, inst); err != nil {
		return nil, fmt.Errorf("adopt %s: %w", req.Name, err)
	}
	a.log.Info("adopted legacy container", "instance", inst.Name, "container", c.Name, "id", c.ID)
	return &dtma.AdoptResult{Action: "adopt", Instance: inst.Clone()}, nil
}

// adoptCandidates lists the container names to look for: the one given, or
// the instance name as is and in the sanitized forms a legacy agent may
// have used. Only well-formed container references are listed: nothing
// else is ever put into a Docker API path.
func adoptCandidates(req dtma.AdoptRequest) []string {
	if req.Container != "" {
		return []string{req.Container}
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range derivedNames(req.Name) {
		if validContainerRef(s) && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// derivedNames are the container names a legacy agent may have given the
// instance name.
func derivedNames(name string) []string {
	return []string{
		name,
		strings.ReplaceAll(name, " ", "-"),
		strings.ToLower(strings.ReplaceAll(name, " ", "-")),
		strings.TrimPrefix(dtma.ContainerName(name), "dtma-"),
		strings.ReplaceAll(name, " ", "_"),
	}
}

// derivedName reports whether container name cname is one of the names
// derived from the instance name.
func derivedName(instance, cname string) bool {
	for _, n := range derivedNames(instance) {
		if n == cname {
			return true
		}
	}
	return false
}

// validContainerRef reports whether ref is a Docker container name
// ([a-zA-Z0-9][a-zA-Z0-9_.-]*, an optional leading "/", at most 255 bytes,
// no "..") or a full 64-hex container id.
func validContainerRef(ref string) bool {
	if isFullID(ref) {
		return true
	}
	name := strings.TrimPrefix(ref, "/")
	if name == "" || len(name) > 255 || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && (i == 0 || (c != '_' && c != '.' && c != '-')) {
			return false
		}
	}
	return true
}

func isFullID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			return false
		}
	}
	return true
}

// exactContainer reports whether c is the container ref names exactly: its
// full id, or its name. Docker's inspect also resolves a unique id prefix;
// such a match is not the container that was named.
func exactContainer(c *dtma.Container, ref string) bool {
	return c.ID == ref || c.Name == strings.TrimPrefix(ref, "/")
}
