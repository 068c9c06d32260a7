package dtma

import (
	"testing"
	"time"
)

func TestHealthCheckLeavesOldHashesAlone(t *testing.T) {
	s := Spec{Image: "a:1", Ports: []Port{{ContainerPort: 80, Protocol: "tcp"}}}
	// The hash of this spec before Health existed (V2 shape without limits).
	before := s.Hash()
	s2 := s
	s2.Health = HealthCheck{}
	if s2.Hash() != before || !s.Equal(s2) || len(s.Diff(s2)) != 0 {
		t.Fatal("an unset check changes hash/equality")
	}
	s2.Health = HealthCheck{Type: CheckMCP}
	if s2.Hash() == before || s.Equal(s2) {
		t.Fatal("a set check does not change hash/equality")
	}
	if d := s.Diff(s2); len(d) != 1 || d[0] != "health (none vs mcp streamable /mcp every 10s)" {
		t.Fatalf("diff = %q", d)
	}
}

func TestValidateHealthCheck(t *testing.T) {
	ports := []Port{{ContainerPort: 8080, Protocol: "tcp"}, {ContainerPort: 53, Protocol: "udp"}}
	ok := []HealthCheck{{}, {Type: CheckNone}, {Type: CheckTCP}, {Type: CheckHTTP, Path: "/healthz", ExpectStatus: 204},
		{Type: CheckMCP, Transport: CheckMCPSSE, Interval: 5 * time.Second, Timeout: time.Second, Retries: 2, StartPeriod: time.Minute, OnUnhealthy: "restart"}}
	for _, h := range ok {
		if err := ValidateHealthCheck(h, ports); err != nil {
			t.Errorf("%+v: %v", h, err)
		}
	}
	bad := map[string]HealthCheck{
		"health.type":          {Type: "grpc"},
		"health.port":          {Type: CheckTCP, Port: 53},
		"health.path":          {Type: CheckHTTP, Path: "healthz"},
		"health.expect_status": {Type: CheckMCP, ExpectStatus: 200},
		"health.transport":     {Type: CheckMCP, Transport: "ws"},
		"health.interval":      {Type: CheckTCP, Interval: time.Millisecond},
		"health.timeout":       {Type: CheckTCP, Interval: 2 * time.Second, Timeout: 5 * time.Second},
		"health.retries":       {Type: CheckTCP, Retries: -1},
		"health.start_period":  {Type: CheckTCP, StartPeriod: -time.Second},
		"health.on_unhealthy":  {Type: CheckTCP, OnUnhealthy: "kill"},
	}
	for field, h := range bad {
		err := ValidateHealthCheck(h, ports)
		if e, isE := err.(*Error); !isE || e.Field != field || e.Code != EINVALID {
			t.Errorf("%+v: got %v, want EINVALID on %s", h, err, field)
		}
	}
	if err := ValidateHealthCheck(HealthCheck{Type: CheckTCP}, nil); err == nil {
		t.Error("a check without a published port passes")
	}
	if DefaultLegacyCheck(nil).Enabled() || DefaultLegacyCheck(ports) != (HealthCheck{Type: CheckTCP}) {
		t.Error("legacy default")
	}
}
