// Package heartbeat sends the legacy agent's heartbeat to the platform's
// backend: POST {base URL}/heartbeat with the agent's version, the host's
// metrics and the status of each tool instance.
package heartbeat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// Defaults of the legacy agent.
const (
	DefaultInterval = 60 * time.Second
	DefaultTimeout  = 15 * time.Second
)

// Sender posts heartbeats. Configure it, then call Run (or Send). Its fields
// must not change once Run has started.
type Sender struct {
	// URL is the backend's base URL (AGENTOPIA_API_BASE_URL); heartbeats go
	// to URL+"/heartbeat".
	URL string
	// Token is sent as "Authorization: Bearer <Token>". It is never logged
	// nor put in an error.
	Token string
	// Interval between heartbeats; 0 means DefaultInterval.
	Interval time.Duration
	// Timeout of one heartbeat request; 0 means DefaultTimeout.
	Timeout time.Duration
	// Version is sent as dtma_version.
	Version string
	// Instances lists this host's instances; nil sends no tool statuses.
	Instances func(ctx context.Context) ([]*dtma.Instance, error)
	// Metrics reads the host's metrics; nil sends zero metrics.
	Metrics dtma.SystemMetricsSource
	// Log receives failures (warn); nil means slog.Default().
	Log *slog.Logger
	// Client sends the requests; nil means a new http.Client.
	Client *http.Client
	// RuntimeDetails adds runtime_details to each tool status. Off by
	// default: the backend's schema dropped that column in May 2025, and
	// its receiver then fails every tool's update (while still answering
	// 204). Turn it on only for a backend that still has the column.
	RuntimeDetails bool
	// RetryMin is the first delay before a failed heartbeat is retried;
	// the delay doubles up to Interval. 0 means DefaultRetryMin.
	RetryMin time.Duration
	// OnSend, when set, is told the outcome of every heartbeat Run sends
	// (nil: delivered) — the agent's metrics.
	OnSend func(err error)
}

// DefaultRetryMin is the first retry delay after a failed heartbeat.
const DefaultRetryMin = 5 * time.Second

// StatusError is the cause of a Send error when the backend answered with a
// status other than 2xx.
type StatusError struct {
	StatusCode int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("backend answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Run sends a heartbeat at once, then every Interval, until ctx ends. A
// failed heartbeat is retried with backoff — after RetryMin, doubling up to
// Interval — and logged: a 401 or 403 at error level naming the likely cause
// (the first of a run of failures, then every tenth), other failures at
// warn level. Run never returns early.
func (s *Sender) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	retry := s.RetryMin
	if retry <= 0 {
		retry = DefaultRetryMin
	}
	failures := 0
	for {
		next := interval
		err := s.Send(ctx)
		if s.OnSend != nil && ctx.Err() == nil {
			s.OnSend(err)
		}
		if err != nil && ctx.Err() == nil {
			failures++
			s.logFailure(ctx, err, failures)
			next = min(retry<<min(failures-1, 16), interval)
		} else {
			failures = 0
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// logFailure logs the failures-th failed heartbeat in a row.
func (s *Sender) logFailure(ctx context.Context, err error, failures int) {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	attrs := []any{"url", s.endpoint(), "error", err.Error(), "failures", failures}
	var se *StatusError
	if errors.As(err, &se) {
		attrs = append(attrs, "status", se.StatusCode)
		if se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden {
			if failures == 1 || failures%10 == 0 {
				log.ErrorContext(ctx, "heartbeat refused by the backend: this host's DTMA_BEARER_TOKEN is likely not the token the backend issued for this host (it answers 401 for a token it does not know); retrying with backoff", attrs...)
			}
			return
		}
	}
	log.WarnContext(ctx, "heartbeat failed; retrying with backoff", attrs...)
}

// Send posts one heartbeat and waits at most Timeout for the answer. A 2xx
// answer is success.
//
// It posts even when the instances or the metrics cannot be read, so the
// backend still sees the agent alive: without tool statuses (an empty list)
// or with zero metrics respectively; it then returns an error saying what
// was left out (after a successful post).
//
// Errors are *dtma.Error: EINVALID when URL or Token is unset; EUNAVAILABLE
// when the backend cannot be reached or answers 5xx; EUNAUTHORIZED for a
// 401 and EFORBIDDEN for a 403 (the token is not known to the backend);
// EINTERNAL for any other non-2xx answer or when data was left out. A
// non-2xx answer carries a *StatusError cause.
func (s *Sender) Send(ctx context.Context) error {
	if s.URL == "" {
		return dtma.Errorf(dtma.EINVALID, "heartbeat: no backend URL configured")
	}
	if s.Token == "" {
		return dtma.Errorf(dtma.EINVALID, "heartbeat: no token configured")
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	body, partial := s.build(ctx)
	b, err := json.Marshal(body)
	if err != nil {
		return &dtma.Error{Code: dtma.EINTERNAL, Message: "heartbeat: encode body", Err: err}
	}
	url := s.endpoint()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		// The URL is configuration, not a secret.
		return &dtma.Error{Code: dtma.EINVALID, Message: fmt.Sprintf("heartbeat: bad URL %q", url), Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Token)

	client := s.Client
	if client == nil {
		client = &http.Client{}
	}
	resp, err := client.Do(req)
	if err != nil {
		return &dtma.Error{Code: dtma.EUNAVAILABLE, Message: "heartbeat: backend unreachable", Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		code := dtma.EINTERNAL
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			code = dtma.EUNAUTHORIZED
		case resp.StatusCode == http.StatusForbidden:
			code = dtma.EFORBIDDEN
		case resp.StatusCode >= 500:
			code = dtma.EUNAVAILABLE
		}
		se := &StatusError{StatusCode: resp.StatusCode}
		return &dtma.Error{Code: code, Message: "heartbeat: " + se.Error(), Err: se}
	}
	if partial != nil {
		return &dtma.Error{Code: dtma.EINTERNAL, Message: "heartbeat: sent incomplete", Err: partial}
	}
	return nil
}

func (s *Sender) endpoint() string {
	return strings.TrimRight(s.URL, "/") + "/heartbeat"
}

// build gathers the heartbeat body. partial reports what could not be
// gathered; the body is complete otherwise.
func (s *Sender) build(ctx context.Context) (b Body, partial error) {
	b = Body{DTMAVersion: s.Version, ToolStatuses: []ToolStatus{}}
	var errs []error
	if s.Metrics != nil {
		m, err := s.Metrics.SystemMetrics(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("system metrics: %w", err))
		} else {
			b.SystemStatus = m
		}
	}
	if s.Instances != nil {
		insts, err := s.Instances(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list instances: %w", err))
		}
		for _, inst := range insts {
			if err == nil && inst != nil && inst.AccountToolInstanceID != "" {
				ts := NewToolStatus(inst)
				if !s.RuntimeDetails {
					ts.RuntimeDetails = nil
				}
				b.ToolStatuses = append(b.ToolStatuses, ts)
			}
		}
	}
	return b, errors.Join(errs...)
}

// Body is the heartbeat's JSON body; field names are the legacy contract's.
type Body struct {
	DTMAVersion  string             `json:"dtma_version"`
	SystemStatus dtma.SystemMetrics `json:"system_status"`
	ToolStatuses []ToolStatus       `json:"tool_statuses"`
}

// ToolStatus is one instance in a heartbeat.
//
// Only instances with an account tool instance id are reported: the backend
// finds the row to update by account_tool_instance_id, so an entry without
// one matches nothing (and an empty string where the backend expects a UUID
// may make it reject the whole heartbeat). Instances deployed without an id
// are visible through GET /status instead.
type ToolStatus struct {
	AccountToolInstanceID string          `json:"account_tool_instance_id"`
	StatusOnToolbox       string          `json:"status_on_toolbox"`
	RuntimeDetails        *RuntimeDetails `json:"runtime_details,omitempty"` // sent only with Sender.RuntimeDetails
}

// RuntimeDetails is the container behind a ToolStatus.
type RuntimeDetails struct {
	ContainerID  string       `json:"container_id"`
	Image        string       `json:"image"`
	StartedAt    string       `json:"started_at"` // RFC 3339, "" when never started
	Ports        []Port       `json:"ports"`      // where the tool is really published
	StateDetails StateDetails `json:"state_details"`
}

// Port is a published port in the legacy /status shape.
type Port struct {
	IP          string `json:"ip"`
	PrivatePort int    `json:"private_port"`
	PublicPort  int    `json:"public_port"`
	Type        string `json:"type"`
}

// StateDetails is DTMA's own view of an instance, beyond what the legacy
// backend reads.
type StateDetails struct {
	DockerStatus string `json:"docker_status"`
	DTMAStatus   string `json:"dtma_status"`
	DesiredState string `json:"desired_state"`
	ExitCode     int    `json:"exit_code"`
	RestartCount int    `json:"restart_count"`
	Drift        bool   `json:"drift"`
	LastError    string `json:"last_error"`
}

// NewToolStatus returns inst as a heartbeat entry.
func NewToolStatus(inst *dtma.Instance) ToolStatus {
	started := ""
	if !inst.StartedAt.IsZero() {
		started = inst.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	ports := make([]Port, 0, len(inst.Ports)+1)
	for _, p := range inst.PublishedPorts() { // a stdio bridge's port too
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		ports = append(ports, Port{IP: ip, PrivatePort: p.ContainerPort, PublicPort: p.HostPort, Type: p.Protocol})
	}
	return ToolStatus{
		AccountToolInstanceID: inst.AccountToolInstanceID,
		StatusOnToolbox:       StatusOnToolbox(inst),
		RuntimeDetails: &RuntimeDetails{
			ContainerID: inst.ContainerID,
			Image:       inst.Spec.Image,
			StartedAt:   started,
			Ports:       ports,
			StateDetails: StateDetails{
				DockerStatus: string(inst.DockerStatus),
				DTMAStatus:   string(inst.Status),
				DesiredState: string(inst.DesiredState),
				ExitCode:     inst.ExitCode,
				RestartCount: inst.RestartCount,
				Drift:        inst.Drift(),
				LastError:    inst.LastError,
			},
		},
	}
}

// StatusOnToolbox returns the status_on_toolbox word for inst: always a
// value of the backend's enum (dtma.HeartbeatStatus says which and why).
func StatusOnToolbox(inst *dtma.Instance) string {
	return dtma.HeartbeatStatus(inst)
}
