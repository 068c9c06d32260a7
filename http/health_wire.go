package http

import (
	"math"
	"time"

	"github.com/agentopia/dtma"
)

// HealthCheckRequest is a v1 deploy's health object; durations are in
// seconds (fractions allowed).
type HealthCheckRequest struct {
	Type         string  `json:"type"`
	Port         int     `json:"port,omitempty"`
	Path         string  `json:"path,omitempty"`
	ExpectStatus int     `json:"expect_status,omitempty"`
	Transport    string  `json:"transport,omitempty"`
	Interval     float64 `json:"interval,omitempty"`
	Timeout      float64 `json:"timeout,omitempty"`
	Retries      int     `json:"retries,omitempty"`
	StartPeriod  float64 `json:"start_period,omitempty"`
	OnUnhealthy  string  `json:"on_unhealthy,omitempty"`
}

// seconds converts a wire duration; the error names field.
func seconds(field string, v float64) (time.Duration, error) {
	if math.IsNaN(v) || v < 0 || v > 86400 {
		return 0, dtma.FieldErrorf(dtma.EINVALID, field, "must be a number of seconds between 0 and 86400")
	}
	return time.Duration(v * float64(time.Second)).Round(time.Millisecond), nil
}

// healthCheck converts the request's health object (zero when absent);
// dtma.ValidateHealthCheck checks the rest when the deploy is validated.
func (b *DeployRequest) healthCheck() (dtma.HealthCheck, error) {
	if b.Health == nil {
		return dtma.HealthCheck{}, nil
	}
	h := b.Health
	c := dtma.HealthCheck{Type: dtma.CheckType(h.Type), Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus,
		Transport: h.Transport, Retries: h.Retries, OnUnhealthy: h.OnUnhealthy}
	var err error
	if c.Interval, err = seconds("health.interval", h.Interval); err != nil {
		return c, err
	}
	if c.Timeout, err = seconds("health.timeout", h.Timeout); err != nil {
		return c, err
	}
	if c.StartPeriod, err = seconds("health.start_period", h.StartPeriod); err != nil {
		return c, err
	}
	if c.Type == "" {
		return c, dtma.FieldErrorf(dtma.EINVALID, "health.type", "is required: none, tcp, http or mcp")
	}
	return c, nil
}

// InstanceHealth is an instance's health as v1 shows it: the check it runs (the
// spec's, or the default on its first published tcp port) with defaults
// filled in, and what the prober last concluded. null when no check runs.
type InstanceHealth struct {
	Check               HealthCheckRequest `json:"check"`
	Default             bool               `json:"default"` // the check is the agent's default, not the deploy's
	State               string             `json:"state"`   // starting, healthy, unhealthy; unknown when not probed (not running)
	LastError           *string            `json:"last_error"`
	LastLatencyMS       *float64           `json:"last_latency_ms"`
	ConsecutiveFailures int                `json:"consecutive_failures"`
	ChangedAt           *time.Time         `json:"changed_at"`
	CheckedAt           *time.Time         `json:"checked_at"`
	Detail              *string            `json:"detail"`
}

// toHealth is inst's health block, nil when it has no check.
func toHealth(inst *dtma.Instance) *InstanceHealth {
	c, isDefault := inst.EffectiveCheck()
	if !c.Enabled() {
		return nil
	}
	c = c.WithDefaults()
	st := inst.Health
	h := &InstanceHealth{
		Check: HealthCheckRequest{Type: string(c.Type), Port: c.Port, Path: c.Path, ExpectStatus: c.ExpectStatus, Transport: c.Transport,
			Interval: c.Interval.Seconds(), Timeout: c.Timeout.Seconds(), Retries: c.Retries, StartPeriod: c.StartPeriod.Seconds(), OnUnhealthy: c.OnUnhealthy},
		Default:             isDefault,
		State:               string(st.State),
		LastError:           strPtr(st.LastError),
		ConsecutiveFailures: st.ConsecutiveFailures,
		ChangedAt:           timePtr(st.ChangedAt),
		CheckedAt:           timePtr(st.CheckedAt),
		Detail:              strPtr(st.Detail),
	}
	if h.State == "" {
		h.State = "unknown"
	}
	if st.LastLatency > 0 {
		ms := float64(st.LastLatency.Microseconds()) / 1000
		h.LastLatencyMS = &ms
	}
	return h
}
