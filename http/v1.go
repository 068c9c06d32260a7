package http

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/agentopia/dtma"
)

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// dockerStatusWord is Docker's state word, "missing" when there is no
// container, "unknown" before the first observation.
func dockerStatusWord(inst *dtma.Instance) string {
	if inst.DockerStatus == dtma.DockerUnknown {
		return "unknown"
	}
	return string(inst.DockerStatus)
}

func (s *Server) handleV1Deploy(w http.ResponseWriter, r *http.Request) {
	var body DeployRequest
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	check, err := body.healthCheck()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limits, err := body.limits()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mcp, err := body.MCP.spec()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var pull dtma.PullOptions
	if a := body.RegistryAuth; a != nil {
		pull.Auth = &dtma.RegistryAuth{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
		if err := pull.Auth.Validate(); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	stream := newDeployStream(w, r)
	if stream != nil {
		pull.Progress = stream.progress
	}
	ctx := r.Context()
	if pull.Auth != nil || pull.Progress != nil {
		ctx = dtma.WithPullOptions(ctx, pull)
	}
	inst, created, err := s.Service.Deploy(ctx, dtma.DeployRequest{
		Name:                  body.Name,
		AccountToolInstanceID: body.AccountToolInstanceID,
		Spec:                  dtma.Spec{Image: body.Image, Env: body.Env, Ports: body.Ports, Limits: limits, MCP: mcp, Health: check},
		PullPolicy:            dtma.PullPolicy(body.PullPolicy),
	})
	if stream != nil && stream.started {
		if dtma.ErrorCode(err) == dtma.EINTERNAL && err != nil {
			s.Logger.Error("internal error", "method", "POST", "path", "/v1/instances", "err", err)
		}
		stream.finish(inst, created, err)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, NewInstance(inst))
}

func (s *Server) handleV1List(w http.ResponseWriter, r *http.Request) {
	list, err := s.Service.ListInstances(r.Context())
	if err == nil {
		list, err = filterInstances(list, r.URL.Query())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(r.URL.Query()) > 0 {
		writeList(w, list, "") // a filtered few: the cache keeps the whole list
		return
	}
	writeEncodedList(w, s.rowCache.encode(list))
}

func (s *Server) handleV1Fleet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, _, err := page(nil, q); err != nil { // a bad query costs no registry read
		s.writeError(w, r, err)
		return
	}
	var list []*dtma.Instance
	var next string
	var err error
	if p, ok := s.Service.(fleetPager); ok && (q.Get("limit") != "" || q.Get("cursor") != "") {
		list, next, err = fleetPage(r.Context(), p, q)
	} else if list, err = s.Service.ListFleet(r.Context()); err == nil {
		list, next, err = page(list, q)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeList(w, list, next)
}

func (s *Server) handleV1Get(w http.ResponseWriter, r *http.Request) {
	inst, err := s.Service.FindInstance(r.Context(), r.PathValue("ref"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, NewInstance(inst))
}

// doAction runs start, stop or restart and says whether it changed
// anything.
func (s *Server) doAction(r *http.Request, action dtma.Op) (*dtma.Instance, bool, error) {
	ref := r.PathValue("ref")
	switch action {
	case dtma.OpStart:
		return s.Service.StartInstance(r.Context(), ref)
	case dtma.OpStop:
		var timeout time.Duration
		if v := r.URL.Query().Get("timeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 3600 {
				return nil, false, dtma.FieldErrorf(dtma.EINVALID, "timeout", "must be whole seconds from 0 to 3600")
			}
			timeout = time.Duration(n) * time.Second
		}
		return s.Service.StopInstance(r.Context(), ref, timeout)
	default: // dtma.OpRestart
		inst, err := s.Service.RestartInstance(r.Context(), ref)
		return inst, true, err
	}
}

func actionMessage(action dtma.Op, inst *dtma.Instance, changed bool) string {
	switch {
	case action == dtma.OpStart && !changed:
		return "instance " + inst.Name + " is already running"
	case action == dtma.OpStart:
		return "instance " + inst.Name + " started"
	case action == dtma.OpStop && !changed:
		return "instance " + inst.Name + " is already stopped"
	case action == dtma.OpStop:
		return "instance " + inst.Name + " stopped"
	}
	return "instance " + inst.Name + " restarted"
}

func (s *Server) handleV1Action(action dtma.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inst, changed, err := s.doAction(r, action)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ActionResult{Changed: changed, Message: actionMessage(action, inst, changed), Instance: NewInstance(inst)})
	}
}

func (s *Server) handleV1Remove(w http.ResponseWriter, r *http.Request) {
	if err := s.Service.RemoveInstance(r.Context(), r.PathValue("ref")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseLogOptions reads tail (default 100 for the legacy face, all for v1
// when absent) and follow.
func parseLogOptions(r *http.Request, defaultTail int) (dtma.LogOptions, error) {
	opts := dtma.LogOptions{Tail: defaultTail}
	q := r.URL.Query()
	if v := q.Get("tail"); v != "" && v != "all" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100000 {
			return opts, dtma.FieldErrorf(dtma.EINVALID, "tail", "must be a whole number from 0 to 100000, or all")
		}
		opts.Tail = n
	} else if v == "all" {
		opts.Tail = 0
	}
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return opts, dtma.FieldErrorf(dtma.EINVALID, "follow", "must be true or false")
		}
		opts.Follow = b
	}
	return opts, nil
}

func (s *Server) handleV1Logs(w http.ResponseWriter, r *http.Request) {
	opts, err := parseLogOptions(r, 0)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc, err := s.Service.InstanceLogs(r.Context(), r.PathValue("ref"), opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	_ = streamLogs(w, rc, opts.Follow)
}

// streamLogs answers 200 with rc as plain text: copied whole, or with
// follow line by line, each flushed at once. It returns the error that
// ended the stream (io.EOF when the logs ended; a write error when the
// client left).
func streamLogs(w http.ResponseWriter, rc io.Reader, follow bool) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if !follow {
		_, err := io.Copy(w, rc)
		return err
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	br := bufio.NewReader(rc)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return err
		}
	}
}

func (s *Server) handleV1Adopt(w http.ResponseWriter, r *http.Request) {
	if err := s.adoptAllowed(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var body AdoptRequest
	if err := decodeJSON(w, r, &body, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.Service.AdoptContainer(r.Context(), dtma.AdoptRequest{
		Name:                  body.Name,
		AccountToolInstanceID: body.AccountToolInstanceID,
		Image:                 body.Image,
		Container:             body.Container,
		DryRun:                body.DryRun,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := AdoptResult{Action: res.Action, DryRun: body.DryRun, Reason: res.Reason}
	if res.Instance != nil {
		wire := NewInstance(res.Instance)
		out.Instance = &wire
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleV1Health(w http.ResponseWriter, r *http.Request) {
	h := s.Service.Health(r.Context())
	status := http.StatusOK
	if !h.DockerOK || !h.RegistryOK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, Health{
		Version:        h.Version,
		HostID:         h.HostID,
		DockerOK:       h.DockerOK,
		DockerError:    strPtr(h.DockerError),
		RegistryOK:     h.RegistryOK,
		RegistryError:  strPtr(h.RegistryError),
		LastObservedAt: timePtr(h.LastObservedAt),
	})
}
